#!/usr/bin/env node
// AWS SDK for JavaScript v3 client for credport's compatibility tests.
//
// Credentials: the client's default chain (@aws-sdk/credential-provider-node defaultProvider,
// same as fromNodeProviderChain() in @aws-sdk/credential-providers); nothing explicit.
// With AWS_CONTAINER_CREDENTIALS_FULL_URI (or RELATIVE_URI) set, the chain's remote step is
// fromHttp (@aws-sdk/credential-provider-http), then fromContainerMetadata as a fallback.
// STS endpoint: AWS_ENDPOINT_URL_STS is honoured natively by v3 clients.
//
// Usage: whoami-v3.mjs [--mode sts|creds-only] [--loop N] [--interval S] [--keep-going]
// Output: one JSON line per call; {"error": ...} and exit 2 on failure.
import { createRequire } from "node:module";
import { STSClient, GetCallerIdentityCommand } from "@aws-sdk/client-sts";

const require = createRequire(import.meta.url);
const { parseArgs, run, emit, errorText, installCrashHandler } = require("./common.cjs");
installCrashHandler("aws-sdk-js-v3");

const args = parseArgs(process.argv.slice(2));
const base = {
  client: "aws-sdk-js-v3",
  version: require("@aws-sdk/client-sts/package.json").version,
  credential_provider_node: require("@aws-sdk/credential-provider-node/package.json").version,
};

let sts;
try {
  sts = new STSClient({});
} catch (e) {
  emit({ error: errorText(e), client: base.client });
  process.exit(2);
}

// The access key that signed the request, read from the SigV4 Authorization header after
// signing (a deserialize-step middleware sees the signed request); costs no extra fetch.
let signingKey = null;
sts.middlewareStack.add(
  (next) => async (args) => {
    const auth = args.request?.headers?.authorization ?? args.request?.headers?.Authorization;
    const m = /Credential=([^/]+)\//.exec(auth ?? "");
    signingKey = m ? m[1] : null;
    return next(args);
  },
  { step: "deserialize", name: "credportSigningKey", priority: "high" },
);

const sfx = (k) => (k ? k.slice(-4) : null);

await run(args, base, async () => {
  if (args.mode === "creds-only") {
    // The client's own memoized credential provider (what the signer uses).
    const c = await sts.config.credentials();
    return {
      access_key_id_suffix: sfx(c.accessKeyId),
      expiry: c.expiration ? c.expiration.toISOString().replace(/\.\d{3}Z$/, "Z") : null,
    };
  }
  const out = await sts.send(new GetCallerIdentityCommand({}));
  return { account: out.Account, arn: out.Arn, access_key_id_suffix: sfx(signingKey) };
});
