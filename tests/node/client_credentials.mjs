// Acquire an app token from the fake Authority with unmodified MSAL Node, twice (the second from cache).
// Usage: node client_credentials.mjs AUTHORITY CLIENT_ID CLIENT_SECRET SCOPE   (prints one JSON line)
import { ConfidentialClientApplication } from "@azure/msal-node";

const [authority, clientId, clientSecret, scope] = process.argv.slice(2);
const host = new URL(authority).host;
const app = new ConfidentialClientApplication({
  auth: { clientId, authority, clientSecret, knownAuthorities: [host] },
});
try {
  const first = await app.acquireTokenByClientCredential({ scopes: [scope] });
  const second = await app.acquireTokenByClientCredential({ scopes: [scope] });
  console.log(JSON.stringify({
    ok: true,
    tokenType: first.tokenType,
    sameToken: first.accessToken === second.accessToken,
    fromCache: second.fromCache,
    expiresOn: first.expiresOn,
    accessTokenLength: first.accessToken.length,
  }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, errorCode: err.errorCode, message: String(err.errorMessage || err) }));
}
