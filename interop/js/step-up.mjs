// A third-party client, oauth4webapi, against `stepup demo`: discovery,
// authorization code with PKCE, a call the API refuses with an RFC 9470
// challenge (read with oauth4webapi's own WWW-Authenticate parser), a new
// authorization request with the asked acr_values / max_age, and the
// retried call. The "user" fills the sign-in pages over HTTP (the demo
// shows the current TOTP code on its page).
//
// Usage: node step-up.mjs ISSUER API_BASE
// Prints one JSON object with what happened; exits non-zero on failure.
import * as oauth from "oauth4webapi";

const [issuerArg, apiBase] = process.argv.slice(2);
if (!issuerArg || !apiBase) {
  console.error("usage: node step-up.mjs ISSUER API_BASE");
  process.exit(2);
}
const issuer = new URL(issuerArg);
// The demo runs on http://localhost: oauth4webapi refuses plain HTTP unless told.
const insecure = { [oauth.allowInsecureRequests]: true };
const client = { client_id: "stepup-cli" };
// A native app's loopback redirect (RFC 8252 §7.3: any port).
const redirectUri = "http://127.0.0.1:1/callback";

const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { ...insecure, algorithm: "oauth2" }));

// The API describes itself (RFC 9728): tokens are asked for it (RFC 8707
// `resource`) and only if it names this authorization server.
const resourceId = new URL(apiBase);
const rs = await oauth.processResourceDiscoveryResponse(resourceId, await oauth.resourceDiscoveryRequest(resourceId, insecure));
if (!rs.authorization_servers?.includes(as.issuer)) {
  throw new Error(`the API does not name ${as.issuer}: ${JSON.stringify(rs)}`);
}

/** The user at the browser: a cookie jar and the sign-in forms. */
const cookies = new Map();
async function browse(url, init = {}) {
  const headers = new Headers(init.headers || {});
  if (cookies.size) headers.set("cookie", [...cookies].map(([k, v]) => `${k}=${v}`).join("; "));
  const response = await fetch(url, { ...init, headers, redirect: "manual" });
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const i = pair.indexOf("=");
    cookies.set(pair.slice(0, i), pair.slice(i + 1));
  }
  return response;
}
function hidden(html, name) {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  if (!m) throw new Error(`no ${name} in page: ${html.slice(0, 300)}`);
  return m[1];
}
const asked = [];
async function signIn(authorizationUrl) {
  let response = await browse(authorizationUrl);
  for (let i = 0; i < 6; i++) {
    const location = response.headers.get("location");
    if (location) return new URL(location);
    const html = await response.text();
    const form = new URLSearchParams({ request: hidden(html, "request"), csrf: hidden(html, "csrf") });
    let path;
    if (html.includes('name="password"')) {
      form.set("username", "demo");
      form.set("password", "demo-password");
      path = "/login/password";
      asked.push("password");
    } else if (html.includes('name="code"')) {
      const code = html.match(/id="demo-code">(\d{6})</);
      if (!code) throw new Error("no demo code on the page");
      form.set("code", code[1]);
      path = "/login/otp";
      asked.push("code");
    } else if (html.includes('action="/authorize/approve"')) {
      // A scope or transaction the user approves on its page.
      form.set("decision", "approve");
      path = "/authorize/approve";
    } else {
      throw new Error(`unexpected page: ${html.slice(0, 300)}`);
    }
    response = await browse(new URL(path, issuer), {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: form,
    });
  }
  throw new Error("the sign-in did not end");
}

/** One authorization code flow; `extra` carries acr_values / max_age / scope. */
async function authorize(extra) {
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const url = new URL(as.authorization_endpoint);
  url.searchParams.set("client_id", client.client_id);
  url.searchParams.set("redirect_uri", redirectUri);
  url.searchParams.set("response_type", "code");
  url.searchParams.set("code_challenge", await oauth.calculatePKCECodeChallenge(verifier));
  url.searchParams.set("code_challenge_method", "S256");
  url.searchParams.set("state", state);
  url.searchParams.set("resource", rs.resource);
  for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, String(v));
  const callback = await signIn(url);
  // Checks state and the RFC 9207 iss parameter.
  const params = oauth.validateAuthResponse(as, client, callback, state);
  const response = await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, redirectUri, verifier, {
    ...insecure,
    additionalParameters: { resource: rs.resource },
  });
  return oauth.processAuthorizationCodeResponse(as, client, response);
}

async function callApi(token, method, path, body) {
  try {
    const response = await oauth.protectedResourceRequest(
      token, method, new URL(path, apiBase),
      new Headers({ "content-type": "application/json" }),
      body ? JSON.stringify(body) : undefined, insecure,
    );
    return { status: response.status, body: await response.json() };
  } catch (e) {
    if (e instanceof oauth.WWWAuthenticateChallengeError) {
      return { status: e.status, challenges: e.cause };
    }
    throw e;
  }
}

const out = { resource: rs };
const base = await authorize({ scope: "accounts:read" });
out.balance = await callApi(base.access_token, "GET", "/accounts/42/balance");

// Statements need mfa within 300 s: the API answers 401 with an RFC 9470
// challenge (insufficient_user_authentication, acr_values, max_age), which
// oauth4webapi parses; the client asks for exactly that and retries once.
let attempt = await callApi(base.access_token, "GET", "/accounts/42/statements");
const stepUp = attempt.challenges?.find((c) => c.scheme === "bearer");
out.challenge = stepUp ? { status: attempt.status, ...stepUp.parameters } : null;
if (stepUp) {
  const elevated = await authorize({
    scope: "accounts:read",
    acr_values: stepUp.parameters.acr_values,
    max_age: stepUp.parameters.max_age,
  });
  attempt = await callApi(elevated.access_token, "GET", "/accounts/42/statements");
}
out.statements = attempt;

// Adding a payee needs payments:write, which the server grants only at
// mfa: the RFC 6750 insufficient_scope answer, met the same way.
const payee = { name: "Ada Lovelace", iban: "GB29NWBK60161331926819" };
let added = await callApi(base.access_token, "POST", "/accounts/42/payees", payee);
const scopeChallenge = added.challenges?.find((c) => c.scheme === "bearer");
out.scope_challenge = scopeChallenge ? { status: added.status, ...scopeChallenge.parameters } : null;
if (scopeChallenge) {
  const elevated = await authorize({ scope: `accounts:read ${scopeChallenge.parameters.scope}` });
  added = await callApi(elevated.access_token, "POST", "/accounts/42/payees", payee);
}
out.payee = added;
out.asked = asked;
console.log(JSON.stringify(out));
if (out.statements.status !== 200 || out.payee.status !== 201) process.exit(1);
