"""The HTML pages a browser sees at the fake Authority: login, MFA, consent, form_post and errors.

Forms carry the original authorize parameters as hidden fields, so the flow needs no server-side
pending state; any scripted browser can fill them by field name.
"""

from __future__ import annotations

from jinja2 import DictLoader, Environment, select_autoescape

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} – Fake Microsoft Entra ID</title>
<meta name="referrer" content="no-referrer">
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto}label{display:block;margin:.6rem 0}
input[type=text],input[type=password]{width:100%}.error{color:#a80000}</style></head>
<body><h1>{{ title }}</h1>{% block body %}{% endblock %}</body></html>"""

_HIDDEN = """{% for k, v in params.items() %}<input type="hidden" name="{{ k }}" value="{{ v }}">
{% endfor %}"""

_TEMPLATES = {
    "base.html": _BASE,
    "hidden.html": _HIDDEN,
    "login.html": """{% extends "base.html" %}{% block body %}
<p>Sign in to continue to <strong>{{ app }}</strong>.</p>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form id="login" method="post" action="{{ action }}">{% include "hidden.html" %}
<input type="hidden" name="action" value="login">
<label>Email <input type="text" name="username" value="{{ username }}" autocomplete="username"></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form>{% endblock %}""",
    "mfa.html": """{% extends "base.html" %}{% block body %}
<p>Enter the code from your authenticator app.</p>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form id="mfa" method="post" action="{{ action }}">{% include "hidden.html" %}
<input type="hidden" name="action" value="mfa">
<label>Code <input type="text" name="otp" autocomplete="one-time-code"></label>
<button type="submit">Verify</button></form>{% endblock %}""",
    "consent.html": """{% extends "base.html" %}{% block body %}
<p><strong>{{ app }}</strong> wants to:</p><ul>{% for s in scopes %}<li>{{ s }}</li>{% endfor %}</ul>
<p>Signed in as {{ username }}.</p>
<form id="consent" method="post" action="{{ action }}">{% include "hidden.html" %}
<input type="hidden" name="action" value="consent">
<button type="submit" name="consent" value="accept">Accept</button>
<button type="submit" name="consent" value="deny">Cancel</button></form>{% endblock %}""",
    "form_post.html": """{% extends "base.html" %}{% block body %}
<form id="form_post" method="post" action="{{ action }}">{% include "hidden.html" %}
<noscript><button type="submit">Continue</button></noscript></form>
<script>document.getElementById("form_post").submit();</script>{% endblock %}""",
    "error.html": """{% extends "base.html" %}{% block body %}
<p class="error" role="alert">{{ message }}</p>{% endblock %}""",
}

_ENV = Environment(loader=DictLoader(_TEMPLATES), autoescape=select_autoescape(default=True))


def render(template: str, **values: object) -> str:
    return _ENV.get_template(template).render(**values)
