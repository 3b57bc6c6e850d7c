// The npm oidc-provider, configured like stepup's token bench
// (crates/stepup-server/benches/token.rs), which starts it with
// `node server.mjs` and loads it with the same requests as stepup:
//
// - an ES256 signing key made at start (the only key: access and ID tokens
//   are ES256);
// - RFC 9068 JWT access tokens for the API (resource indicator
//   BENCH_API, accessTokenFormat 'jwt'), the resource every request gets
//   when it names none; a second resource, urn:bench:opaque, issues opaque
//   tokens, because oidc-provider introspects only opaque tokens (it answers
//   "Structured JWT Tokens cannot be introspected" for a JWT);
// - a confidential client `svc` (client_secret_basic, client_credentials),
//   a resource server `rs` (client_secret_basic, introspection only), a
//   public client `web` (authorization_code with PKCE S256 required,
//   rotating refresh tokens, issued without offline_access as stepup does);
// - a user BENCH_USER with the password BENCH_PASSWORD, signed in once
//   through the minimal login page below; after that, /auth with the
//   session cookie is answered at once with a code (loadExistingGrant gives
//   the grant without a consent page);
// - the default in-memory adapter: nothing is written to disk.
//
// Secrets come from the environment (BENCH_SVC_SECRET, BENCH_RS_SECRET,
// BENCH_PASSWORD). It listens on 127.0.0.1, on BENCH_PORT or an ephemeral
// port, and prints one JSON line {"issuer": ...} on stdout once it serves.

import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`server.mjs: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const API = process.env.BENCH_API ?? 'https://api.example';
const OPAQUE = 'urn:bench:opaque';
const REDIRECT = process.env.BENCH_REDIRECT ?? 'https://app.example/cb';
const USER = process.env.BENCH_USER ?? 'alice';
const PASSWORD = required('BENCH_PASSWORD');
const SVC_SECRET = required('BENCH_SVC_SECRET');
const RS_SECRET = required('BENCH_RS_SECRET');

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(process.env.BENCH_PORT ?? 0), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'es256-bench',
};

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  clients: [
    {
      client_id: 'svc',
      client_secret: SVC_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    },
    {
      client_id: 'rs',
      client_secret: RS_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
    {
      client_id: 'web',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [REDIRECT],
      id_token_signed_response_alg: 'ES256',
    },
  ],
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  scopes: ['openid', 'offline_access', 'profile', 'accounts:read'],
  claims: { openid: ['sub'], profile: ['name'] },
  pkce: { required: () => true },
  // stepup's paths, so that the bench sends the same requests to both.
  routes: { authorization: '/authorize', introspection: '/introspect', token: '/token' },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (_ctx, _client, oneOf) => oneOf ?? API,
      useGrantedResource: () => true,
      getResourceServerInfo(_ctx, resource) {
        if (resource === API) {
          return {
            scope: 'profile accounts:read',
            audience: API,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        if (resource === OPAQUE) {
          return {
            scope: 'accounts:read', audience: OPAQUE, accessTokenTTL: 600, accessTokenFormat: 'opaque',
          };
        }
        throw new errors.InvalidTarget();
      },
    },
  },
  // As stepup: a refresh token for the public client without offline_access,
  // a new one at every use.
  issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  // Consent is given once per session and client; later requests reuse it.
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const id = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    if (id) {
      const found = await ctx.oidc.provider.Grant.find(id);
      if (found) return found;
    }
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope('openid profile');
    grant.addResourceScope(API, 'profile accounts:read');
    await grant.save();
    return grant;
  },
  findAccount: (_ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

function same(a, b) {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

async function formBody(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 8192) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// The login page: a password form, nothing else (the bench signs in once).
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  if (details.prompt.name !== 'login') {
    res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(`unexpected prompt ${details.prompt.name}: ${JSON.stringify(details.prompt.reasons)}`);
    return;
  }
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(`<!doctype html><form method="post" action="/interaction/${details.uid}">`
      + '<input name="username"><input name="password" type="password"><button>Sign in</button></form>');
    return;
  }
  const form = await formBody(req);
  if (!same(form.get('username') ?? '', USER) || !same(form.get('password') ?? '', PASSWORD)) {
    res.writeHead(403, { 'content-type': 'text/plain' });
    res.end('wrong user name or password');
    return;
  }
  await provider.interactionFinished(req, res, { login: { accountId: USER } }, { mergeWithLastSubmission: false });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      console.error('interaction:', err);
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    });
    return;
  }
  callback(req, res);
});
server.keepAliveTimeout = 60_000;

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}

console.log(JSON.stringify({ issuer }));
