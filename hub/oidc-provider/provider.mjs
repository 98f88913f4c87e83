// A real OpenID Connect provider (node-oidc-provider) for proxlab's sign-in tests and demo.
//
// It listens on 127.0.0.1 (PORT, or any free port), prints one JSON line with its issuer
// once it is ready, and knows one client, proxlab, whose callback is REDIRECT_URI. Anyone
// signs in with any password (the provider's development login page); a few accounts carry
// claims the tests map to roles:
//   tina  (group "staff": a teacher), sam (group "pupils"), eve (an email of another domain).
// Everyone else is NAME@school.test, in no group.
//
// POST /test/tamper?mode=MODE makes the token endpoint hand out ID tokens that must be
// refused (nonce, expired, signature, audience); no mode turns that off again. It exists only
// so the tests can show that proxlab checks what it receives.
import * as http from 'node:http';
import * as jose from 'jose';
import Provider from 'oidc-provider';

const redirectUri = process.env.REDIRECT_URI;
const postLogoutUri = process.env.POST_LOGOUT_URI;
const clientSecret = process.env.CLIENT_SECRET ?? 'proxlab-test-secret';
if (!redirectUri) {
  console.error('REDIRECT_URI is required');
  process.exit(2);
}

const accounts = {
  tina: { email: 'tina@school.test', email_verified: true, name: 'Tina Teacher', groups: ['staff'] },
  sam: { email: 'sam@school.test', email_verified: true, name: 'Sam Student', groups: ['pupils'] },
  eve: { email: 'eve@elsewhere.test', email_verified: true, name: 'Eve Outsider', groups: [] },
};

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const { privateKey: strangerKey } = await jose.generateKeyPair('RS256');
const signingKey = { ...(await jose.exportJWK(privateKey)), kid: 'proxlab-test', alg: 'RS256', use: 'sig' };

let tamper = null;

async function tampered(idToken, mode) {
  const claims = jose.decodeJwt(idToken);
  let key = privateKey;
  if (mode === 'nonce') claims.nonce = 'not-the-nonce-proxlab-sent';
  if (mode === 'expired') {
    claims.iat -= 7200;
    claims.exp = claims.iat + 600;
  }
  if (mode === 'audience') claims.aud = 'another-client';
  if (mode === 'signature') key = strangerKey;
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'proxlab-test' }).sign(key);
}

const server = http.createServer();
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'proxlab',
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      post_logout_redirect_uris: postLogoutUri ? [postLogoutUri] : [],
      response_types: ['code'],
      grant_types: ['authorization_code'],
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: ['proxlab-test-provider-cookie-key'] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
      groups: ['groups'],
    },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    pkce: { required: () => true },
    async findAccount(ctx, id) {
      const known = accounts[id] ?? { email: `${id}@school.test`, email_verified: true, name: id, groups: [] };
      return { accountId: id, async claims() { return { sub: id, ...known }; } };
    },
  });
  provider.use(async (ctx, next) => {
    if (ctx.path === '/test/tamper' && ctx.method === 'POST') {
      tamper = ctx.query.mode || null;
      ctx.body = { tamper };
      return;
    }
    await next();
    if (ctx.path === '/token' && tamper && ctx.body && ctx.body.id_token) {
      ctx.body.id_token = await tampered(ctx.body.id_token, tamper);
    }
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});
