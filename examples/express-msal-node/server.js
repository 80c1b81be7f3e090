// Example Business Central portal: Express + MSAL Node (@azure/msal-node) + express-session.
//
// A third-party portal as a vendor would write it, verified by bc-oauth-conformance as a process:
//
//   bc-conformance run --portal-cmd "node examples/express-msal-node/server.js" --mode AzApp,AzUser
//
// Configuration is the kit's environment contract (AUTH_MODE, AUTHORITY, TENANT_ID, CLIENT_ID, CLIENT_SECRET,
// REDIRECT_URI, BC_API_URL, BC_SCOPE, PORTAL_PORT). Comments name the documented step each part implements:
// CC-n for the Client Credentials Flow (AzApp), AC-n for the Authorization Code Flow (AzUser, AzDelegate).
//
// Where tokens live:
//   AzApp       one app-wide MSAL application; its in-memory cache holds the app token, shared by every session.
//   AzUser      MSAL's token cache serialized into the user's server-side session (express-session); the
//               browser's cookie holds only the session id. Each request builds an MSAL application around it.
//   AzDelegate  one app-wide MSAL application whose cache holds the delegate account's tokens: the first user
//               to sign in is the delegate, and every portal user is served with that account's token.
"use strict";

const crypto = require("node:crypto");
const express = require("express");
const session = require("express-session");
const msal = require("@azure/msal-node");

const MODES = ["AzApp", "AzUser", "AzDelegate"];
const parseUrl = (value) => { try { return new URL(value); } catch { return null; } };
const HTTP_TIMEOUT_MS = 10_000; // for Business Central calls

// ------------------------------------------------------------------------------------------------ configuration

function loadConfig(env) {
  const mode = env.AUTH_MODE || "";
  const required = ["AUTH_MODE", "AUTHORITY", "TENANT_ID", "CLIENT_ID", "CLIENT_SECRET", "BC_API_URL", "PORTAL_PORT"];
  if (mode !== "AzApp") required.push("REDIRECT_URI"); // the code flow needs it; AzApp does not
  const missing = required.filter((name) => !env[name]);
  if (missing.length) throw new Error(`missing environment variable(s): ${missing.join(", ")}`);
  if (!MODES.includes(mode)) throw new Error(`AUTH_MODE must be one of ${MODES.join(", ")}, got "${mode}"`);
  for (const name of ["AUTHORITY", "BC_API_URL"]) {
    const url = parseUrl(env[name]);
    if (!url || url.protocol !== "https:" || url.pathname.replace(/\//g, "") === "") {
      throw new Error(`${name} must be an https URL with a path, got "${env[name]}"`);
    }
  }
  const tenant = new URL(env.AUTHORITY).pathname.split("/").filter(Boolean)[0].toLowerCase();
  if (["common", "organizations", "consumers"].includes(tenant)) {
    throw new Error(`AUTHORITY must name the tenant (MSAL Node refuses "${tenant}" here), got "${env.AUTHORITY}"`);
  }
  const redirectUri = env.REDIRECT_URI || "";
  if (redirectUri && !["http:", "https:"].includes(parseUrl(redirectUri)?.protocol)) {
    throw new Error(`REDIRECT_URI must be an http(s) URL, got "${redirectUri}"`);
  }
  const port = Number(env.PORTAL_PORT);
  if (!/^\d+$/.test(env.PORTAL_PORT) || port < 1 || port > 65535) {
    throw new Error(`PORTAL_PORT must be a port number, got "${env.PORTAL_PORT}"`);
  }
  const bcScope = env.BC_SCOPE || "https://api.businesscentral.dynamics.com/.default";
  return {
    mode,
    authority: env.AUTHORITY.replace(/\/+$/, ""),
    clientId: env.CLIENT_ID,
    clientSecret: env.CLIENT_SECRET,
    redirectUri,
    bcApiUrl: env.BC_API_URL.replace(/\/+$/, ""),
    bcScope, // app permission (CC-3)
    // The Business Central permission the code flow asks for (AC-3): .default (every permission the app
    // registration holds) unless BC_USER_SCOPE names one; MSAL adds openid, profile and offline_access itself.
    userScopes: [env.BC_USER_SCOPE || bcScope],
    port,
  };
}

let cfg;
try {
  cfg = loadConfig(process.env);
} catch (err) {
  console.error(`express-msal-node portal: configuration error: ${err.message}`);
  process.exit(2);
}

// ------------------------------------------------------------------------------------------------ errors and pages

// A step failed; the user gets a page with this status and message (never a stack trace or a secret).
class PortalError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>` +
    `<body>${body}</body></html>`;
}

function sendError(res, status, message) {
  res.status(status).type("html").send(page("Portal error",
    `<h1>Sorry</h1><p role="alert">${escapeHtml(message)}</p><p><a href="/">Try again</a></p>`));
}

// An MSAL error → a clear page. Only error codes are shown (never the request, never the secret).
function tokenError(err) {
  if (err instanceof PortalError) return err;
  const aadsts = /AADSTS\d+/.exec(err.errorMessage || err.message || "")?.[0];
  // After a 429 or 5xx, MSAL Node answers from its throttling cache (Retry-After, else 60 s) without asking the
  // Authority: a ServerError with no HTTP status.
  const throttled = err instanceof msal.ServerError && err.status === undefined;
  const code = throttled ? "throttled by MSAL" : err.errorCode || "network error";
  const detail = aadsts ? `${code}, ${aadsts}` : code;
  const busy = throttled || !err.errorCode || err.status === 429 || err.status >= 500 ||
    err.errorCode === "temporarily_unavailable";
  return busy
    ? new PortalError(503, `The sign-in service is busy or unavailable (${detail}); try again in a minute.`)
    : new PortalError(502, `The sign-in service refused the portal's token request (${detail}).`);
}

// ------------------------------------------------------------------------------------------------ MSAL

const msalConfig = {
  auth: {
    clientId: cfg.clientId,
    authority: cfg.authority,
    clientSecret: cfg.clientSecret,
    // Trust this authority host as is (host includes the port), e.g. a test Authority on 127.0.0.1.
    knownAuthorities: [new URL(cfg.authority).host],
  },
  system: {
    loggerOptions: {
      logLevel: msal.LogLevel.Warning,
      piiLoggingEnabled: false,
      loggerCallback: (level, message) => console.log(message),
    },
  },
};

const sharedApp = cfg.mode === "AzUser" ? null : new msal.ConfidentialClientApplication(msalConfig);

// AzUser: each request gets an MSAL application around the session's cache. MSAL Node would fetch the Authority's
// discovery document for every new application object, so fetch it once and hand it over (the pattern of
// Microsoft's ms-identity-node samples).
let authorityMetadata;

async function msalAppFor(req) {
  if (sharedApp) return sharedApp;
  if (!authorityMetadata) {
    try {
      const resp = await fetch(`${cfg.authority}/v2.0/.well-known/openid-configuration`,
        { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      authorityMetadata = JSON.stringify(await resp.json());
    } catch (err) {
      throw new PortalError(503, `The sign-in service could not be reached (${err.message}); try again in a minute.`);
    }
  }
  const auth = { ...msalConfig.auth, authorityMetadata };
  const client = new msal.ConfidentialClientApplication({ ...msalConfig, auth });
  if (req.session.tokenCache) client.getTokenCache().deserialize(req.session.tokenCache);
  return client;
}

// CC-5 / AC-8: the session keeps what MSAL stored (AzUser; the shared applications keep their own cache).
function saveCache(req, client) {
  if (client !== sharedApp && client.getTokenCache().hasChanged()) {
    req.session.tokenCache = client.getTokenCache().serialize();
  }
}

// CC-2…CC-5 / AC-2 (and the refresh of AC-7): MSAL returns its cached token while it is valid (it renews with
// 300 s left), else asks the Authority and caches the answer. `renew` bypasses the cache (after a 401).
// Returns null when the user must sign in (AC-3).
async function getToken(req, client, renew = false) {
  try {
    if (cfg.mode === "AzApp") {
      // CC-3: client id + secret, scope BC_SCOPE; CC-4 the answer; CC-5 cached by MSAL.
      const result = await client.acquireTokenByClientCredential({ scopes: [cfg.bcScope], skipCache: renew });
      if (!result?.accessToken) throw new PortalError(502, "The sign-in service returned no access token.");
      return result.accessToken;
    }
    const [account] = await client.getTokenCache().getAllAccounts();
    if (!account) return null;
    try {
      const result = await client.acquireTokenSilent({ account, scopes: cfg.userScopes, forceRefresh: renew });
      return result.accessToken;
    } catch (err) {
      if (err instanceof msal.InteractionRequiredAuthError) return null; // refresh token gone: sign in again
      throw err;
    }
  } catch (err) {
    throw tokenError(err);
  } finally {
    saveCache(req, client);
  }
}

// ------------------------------------------------------------------------------------------------ Business Central

// CC-6 / AC-9: companies, then 5 customers of the first one; the token only in the Authorization header.
// Returns null when Business Central answers 401 (the token was refused).
async function readBusinessCentral(accessToken) {
  const get = async (url) => {
    let resp;
    try {
      resp = await fetch(url, {
        headers: { Authorization: `Bearer ${accessToken}`, Accept: "application/json" },
        signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
      });
    } catch (err) {
      throw new PortalError(502, `Business Central could not be reached (${err.name}).`);
    }
    if (resp.status === 401) return null;
    if (!resp.ok) throw new PortalError(502, `Business Central answered ${resp.status}.`);
    try {
      return (await resp.json()).value ?? [];
    } catch {
      throw new PortalError(502, "Business Central sent an unreadable answer.");
    }
  };
  const companies = await get(`${cfg.bcApiUrl}/companies`);
  if (companies === null) return null;
  let customers = [];
  if (companies.length) {
    customers = await get(`${cfg.bcApiUrl}/companies(${companies[0].id})/customers?$top=5`);
    if (customers === null) return null;
  }
  return { companies, customers };
}

function render(data) { // CC-7 / AC-10
  const companies = data.companies.map((c) => `<li>${escapeHtml(c.name || c.displayName)}</li>`).join("");
  const customers = data.customers
    .map((c) => `<tr><td>${escapeHtml(c.number)}</td><td>${escapeHtml(c.displayName)}</td></tr>`).join("");
  return page("Business Central portal", `<h1>Business Central portal (${escapeHtml(cfg.mode)})</h1>` +
    `<h2>Companies</h2><ul id="companies">${companies}</ul>` +
    `<h2>Customers</h2><table id="customers">${customers}</table>`);
}

// ------------------------------------------------------------------------------------------------ the portal

const app = express();

app.use(session({
  name: "portal_session",
  secret: crypto.randomBytes(32).toString("hex"), // signs the session id cookie; sessions end with the process
  resave: false,
  saveUninitialized: false,
  cookie: { httpOnly: true, sameSite: "lax" },
  // The default MemoryStore is fine for one process; use a shared store (e.g. Redis) in production.
}));

app.use((req, res, next) => {
  res.set("Referrer-Policy", "no-referrer"); // the callback URL (with its code) never leaks
  res.set("Cache-Control", "no-store");
  next();
});

// AC-3: send the browser to the Authority's authorize endpoint with PKCE (S256), a random state of 256 bits and
// a nonce, all kept in the server-side session until the callback consumes them.
async function startSignIn(req, res, client) {
  const { verifier, challenge } = await new msal.CryptoProvider().generatePkceCodes();
  const state = crypto.randomBytes(32).toString("base64url");
  const nonce = crypto.randomBytes(16).toString("base64url");
  const url = await client.getAuthCodeUrl({
    scopes: cfg.userScopes, redirectUri: cfg.redirectUri, state, nonce,
    codeChallenge: challenge, codeChallengeMethod: "S256", responseMode: msal.ResponseMode.QUERY,
  });
  req.session.authFlow = { state, nonce, verifier };
  res.redirect(302, url);
}

app.get("/", async (req, res) => { // CC-1 / AC-1: the user accesses the portal
  const client = await msalAppFor(req);
  let token = await getToken(req, client);
  if (!token) return startSignIn(req, res, client); // AC-3 (AC-4…AC-6 happen at the Authority)
  let data = await readBusinessCentral(token);
  if (!data) {
    // RFC 6750 §3.1: refused though unexpired. Get a new token once and retry once; no loop.
    token = await getToken(req, client, true);
    data = token && await readBusinessCentral(token);
    if (!data) {
      throw new PortalError(502, "Business Central refused the portal's access token, also after renewing it. " +
        "Ask your administrator to check the portal's permissions.");
    }
  }
  res.type("html").send(render(data));
});

const one = (value) => (typeof value === "string" ? value : ""); // a repeated query parameter counts as missing

app.get(new URL(cfg.redirectUri || "http://127.0.0.1/auth/callback").pathname, async (req, res) => {
  // AC-6 arrives here; AC-7 and AC-8 follow. The flow is consumed now: a replayed callback finds nothing to redeem.
  const flow = req.session.authFlow;
  delete req.session.authFlow;
  const state = one(req.query.state);
  if (!flow || !state || state.length !== flow.state.length ||
      !crypto.timingSafeEqual(Buffer.from(state), Buffer.from(flow.state))) {
    return sendError(res, 400, "This sign-in response does not belong to your session (missing or wrong state), " +
      "so it was ignored. Please open the portal again.");
  }
  if (one(req.query.error) === "access_denied") { // the user declined at AC-5: no token request
    return sendError(res, 403, "You declined to let the portal access Business Central, so it cannot show your " +
      "data. Open the portal again to reconsider.");
  }
  if (req.query.error || !one(req.query.code)) {
    return sendError(res, 502, `Sign-in did not complete (${one(req.query.error) || "no code"}).`);
  }
  const client = await msalAppFor(req);
  try { // AC-7: redeem the code server side, with the secret, the same redirect_uri and the PKCE verifier
    await client.acquireTokenByCode(
      { code: one(req.query.code), scopes: cfg.userScopes, redirectUri: cfg.redirectUri,
        codeVerifier: flow.verifier, state: flow.state, nonce: flow.nonce },
      { code: one(req.query.code), state });
  } catch (err) {
    throw tokenError(err);
  } finally {
    saveCache(req, client); // AC-8: MSAL stored the tokens; AzUser keeps them in the session
  }
  res.redirect(303, "/"); // RFC 9700 §4.2.4: continue at a URL without the code
});

app.use((err, req, res, next) => {
  if (!(err instanceof PortalError)) console.error("unexpected error:", err); // details to the log only
  sendError(res, err instanceof PortalError ? err.status : 500,
    err instanceof PortalError ? err.message : "The portal hit an unexpected error.");
});

app.listen(cfg.port, "127.0.0.1", (err) => { // Express 5 hands listen errors (e.g. EADDRINUSE) to this callback
  if (err) {
    console.error(`express-msal-node portal: cannot listen on 127.0.0.1:${cfg.port}: ${err.message}`);
    process.exit(1);
  }
  console.log(`express-msal-node portal (${cfg.mode}) on http://127.0.0.1:${cfg.port}`);
});
