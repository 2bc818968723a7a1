// Shared bits of the Node whoami clients: flags, JSON line output, timestamps.
"use strict";

function usage(msg) {
  emit({ error: `usage: ${msg}; whoami [--mode sts|creds-only] [--loop N] [--interval S] [--keep-going]` });
  process.exit(2);
}

function parseArgs(argv) {
  const a = { mode: "sts", count: 1, interval: 1, looping: false, keepGoing: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === "--mode") a.mode = val();
    else if (arg === "--loop") {
      a.count = Number.parseInt(val(), 10);
      a.looping = true;
      if (!Number.isFinite(a.count)) usage("--loop takes an integer");
    } else if (arg === "--interval") {
      a.interval = Number.parseFloat(val());
      if (!Number.isFinite(a.interval)) usage("--interval takes seconds");
    } else if (arg === "--keep-going") a.keepGoing = true;
    else usage(`unknown argument ${arg}`);
  }
  if (a.mode !== "sts" && a.mode !== "creds-only") usage("--mode must be sts or creds-only");
  return a;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function fmtExpiry(d) {
  if (!d) return null;
  return new Date(d).toISOString().replace(/\.\d{3}Z$/, "Z");
}

const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));

function errorText(e) {
  if (!e) return "unknown error";
  const name = e.name || e.code || "Error";
  return `${name}: ${e.message || String(e)}`;
}

/**
 * Runs `once()` args.count times, args.interval seconds apart. `once()` returns the fields of
 * one output line (merged over `base`) or throws. Exits 2 on error (after the loop with
 * --keep-going).
 */
async function run(args, base, once) {
  let failed = false;
  for (let i = 0; i < args.count; i++) {
    if (i > 0) await sleep(args.interval);
    let line;
    try {
      line = { ...base, ...(await once()) };
    } catch (e) {
      line = { error: errorText(e), client: base.client };
      failed = true;
    }
    if (args.looping) {
      line.ts = new Date().toISOString();
      line.i = i;
    }
    emit(line);
    if (failed && !args.keepGoing) break;
  }
  // stdout is a pipe in tests: let it drain before exiting.
  await new Promise((r) => process.stdout.write("", r));
  process.exit(failed ? 2 : 0);
}

/**
 * Turns an exception that escapes the SDK (aws-sdk v2 throws a token with a newline from
 * inside Node's http.request, outside any callback or promise, and kills the process) into
 * the usual {"error"} line and exit code 2.
 */
function installCrashHandler(client) {
  const onCrash = (e) => {
    emit({ error: `uncaught ${errorText(e)}`, client });
    process.exit(2);
  };
  process.on("uncaughtException", onCrash);
  process.on("unhandledRejection", onCrash);
}

module.exports = {
  installCrashHandler, parseArgs, emit, fmtExpiry, run, errorText };
