"""``bc-conformance load``: many simulated users, each a browser session of its own Entra account, use a portal at
once (Locust drives them) while the kit moves the virtual clock so tokens expire under load and makes Business
Central throttle past its limits; the load checks (``conformance.load.checks``) judge token stampedes, session
cross-talk and throttling from the fakes' trace and what the users saw.

Modules: ``orchestrator`` (fakes, portal, clock, Locust subprocesses), ``runner`` (the Locust process: imports
locust first, so gevent patches sockets before anything else is imported), ``users`` (the Locust user),
``evidence`` (what a run leaves behind, as plain values), ``checks``, ``results`` (results.json's ``load`` key),
``command`` (the CLI function).
"""
