#!/usr/bin/env node
// AWS SDK for JavaScript v2 (aws-sdk, maintenance mode) client for credport's tests.
//
// Credentials: AWS.CredentialProviderChain.defaultProviders (nothing explicit):
//   Environment(AWS_*), Environment(AMAZON_*), SsoCredentials, SharedIniFileCredentials,
//   ECSCredentials (= RemoteCredentials), ProcessCredentials, TokenFileWebIdentity,
//   EC2MetadataCredentials. So a [default] profile in ~/.aws/credentials beats the container
//   provider here too.
//
// What lib/credentials/remote_credentials.js (aws-sdk 2.1693.0) does with the container vars:
// - RELATIVE_URI beats FULL_URI (RELATIVE is http://169.254.170.2 + path).
// - FULL_URI over http:// is accepted ONLY for hostnames 'localhost', '127.0.0.1',
//   '169.254.170.23' (exact strings). Not 169.254.170.2, not 127.0.0.2, not [::1], not
//   fd00:ec2::23. Any host over https:.
// - Token: AWS_CONTAINER_AUTHORIZATION_TOKEN WINS over AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
//   (the file is read only when TOKEN is unset) - the opposite of v3, botocore and Rust.
//   The file is read with readFileSync on every fetch and sent verbatim: no trimming, no
//   CR/LF check (Node's http layer then rejects a header with a newline).
// - Response needs AccessKeyId, SecretAccessKey, Token and Expiration (credsFormatIsValid).
// - 1 s timeout, maxRetries 3; retries only timeouts, 5xx and 429 (a 4xx fails at once).
// - Refresh: AWS.Credentials.expiryWindow = 15 SECONDS: cached credentials are used until
//   15 s before Expiration, then re-fetched (refreshes are coalesced).
// AWS_SDK_LOAD_CONFIG is NOT needed for the container provider (it is in the default chain
// regardless); it only makes v2 read ~/.aws/config (region, role/SSO profiles).
// v2 does NOT honour AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL: the endpoint is passed
// explicitly from AWS_ENDPOINT_URL_STS here. Region comes from AWS_REGION.
//
// Usage: whoami-v2.js [--mode sts|creds-only] [--loop N] [--interval S] [--keep-going]
"use strict";
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE ??= "1";
const { parseArgs, run, emit, errorText, fmtExpiry, installCrashHandler } = require("./common.cjs");
installCrashHandler("aws-sdk-js-v2");

const args = parseArgs(process.argv.slice(2));
let AWS;
let sts;
try {
  AWS = require("aws-sdk");
  const opts = {};
  if (process.env.AWS_ENDPOINT_URL_STS) opts.endpoint = process.env.AWS_ENDPOINT_URL_STS;
  sts = new AWS.STS(opts);
} catch (e) {
  emit({ error: errorText(e), client: "aws-sdk-js-v2" });
  process.exit(2);
}
const base = { client: "aws-sdk-js-v2", version: AWS.VERSION };
const sfx = (k) => (k ? k.slice(-4) : null);

run(args, base, async () => {
  if (args.mode === "creds-only") {
    // Resolves the default chain once (like a service client does), then get() refreshes
    // it when needsRefresh() (expired or within expiryWindow).
    if (!AWS.config.credentials) {
      AWS.config.credentials = await new AWS.CredentialProviderChain().resolvePromise();
    }
    const c = AWS.config.credentials;
    await c.getPromise();
    return { access_key_id_suffix: sfx(c.accessKeyId), expiry: fmtExpiry(c.expireTime) };
  }
  const out = await sts.getCallerIdentity({}).promise();
  return {
    account: out.Account,
    arn: out.Arn,
    access_key_id_suffix: sfx(sts.config.credentials && sts.config.credentials.accessKeyId),
  };
});
