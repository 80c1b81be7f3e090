// Peer for bench/bench_authority.py: oauth2-mock-server over loopback HTTPS.
//
//   node mock_server.mjs --cert FILE --key FILE [--host 127.0.0.1] [--port 0]
//
// Prints one JSON line when listening: {"port", "issuer", "token_url", "kid", "alg", "version"}.
// Stops on SIGTERM/SIGINT (exit 0). Every token response carries a JWT signed per request with the
// generated RS256 key (the package's default behaviour: OAuth2Issuer.buildToken signs on each call).

import { readFileSync } from "node:fs";
import { OAuth2Server } from "oauth2-mock-server";

function parseArgs(argv) {
  const opts = { host: "127.0.0.1", port: 0, cert: "", key: "" };
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i];
    const value = argv[i + 1];
    if (!["--cert", "--key", "--host", "--port"].includes(name) || value === undefined) {
      console.error(`usage: node mock_server.mjs --cert FILE --key FILE [--host H] [--port N] (bad: ${name})`);
      process.exit(2);
    }
    opts[name.slice(2)] = name === "--port" ? Number(value) : value;
    i++;
  }
  if (!opts.cert || !opts.key) {
    console.error("mock_server.mjs: --cert and --key are required (HTTPS only, like the fake Authority)");
    process.exit(2);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
// OAuth2Server(keyPath, certPath, options): both given => node:https server with those files.
const server = new OAuth2Server(opts.key, opts.cert);
const jwk = await server.issuer.keys.generate("RS256");
await server.start(opts.port, opts.host);
const { port } = server.address();
const version = JSON.parse(
  readFileSync(new URL("./node_modules/oauth2-mock-server/package.json", import.meta.url), "utf8"),
).version;

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  // Keep-alive connections from the load generator may linger: do not wait for them forever.
  setTimeout(() => process.exit(0), 1000).unref();
  try {
    await server.stop();
  } catch {
    // already stopped
  }
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

process.stdout.write(
  JSON.stringify({
    port,
    issuer: server.issuer.url,
    token_url: `https://${opts.host}:${port}/token`,
    kid: jwk.kid,
    alg: jwk.alg,
    version,
    node: process.version,
  }) + "\n",
);
