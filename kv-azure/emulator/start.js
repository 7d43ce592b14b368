#!/usr/bin/env node
// Starts @vercel/cosmosdb-server 1.0.1 on plain HTTP with the four fixes the Rust Cosmos DB
// driver needs, applied at runtime (node_modules is never edited):
//
//   1. partition key range ids are sent as strings ("0"), not numbers;
//   2. GET of a missing document answers 404 instead of a 500 TypeError;
//   3. per-range queries (a range id header but no partition key) are allowed across
//      partitions, as the real service does for them;
//   4. the account advertises http:// locations (at the Host the client used) when serving
//      plain HTTP;
//
// plus keep-alive (the stock server closes every connection).
//
// Usage: node start.js --port PORT [--host 127.0.0.1] [--modules DIR]
//   DIR is the directory holding node_modules (default: $KV_EMULATOR_DIR/cosmos, else
//   ~/.cache/wasi-kv-emulators/cosmos), where scripts/setup.sh installs the server.
"use strict";

const path = require("path");
const os = require("os");

const args = { port: 8081, host: "127.0.0.1", modules: null };
const argv = process.argv.slice(2);
while (argv.length) {
  const flag = argv.shift();
  if (flag === "--port") args.port = parseInt(argv.shift(), 10);
  else if (flag === "--host") args.host = argv.shift();
  else if (flag === "--modules") args.modules = argv.shift();
  else {
    console.error(`start.js: unknown argument ${flag}`);
    process.exit(2);
  }
}
if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
  console.error("start.js: --port needs a number from 0 to 65535");
  process.exit(2);
}
const modules =
  args.modules ||
  path.join(process.env.KV_EMULATOR_DIR || path.join(os.homedir(), ".cache", "wasi-kv-emulators"), "cosmos");
const lib = path.join(modules, "node_modules", "@vercel", "cosmosdb-server", "lib");

/// Replaces a handler module's default export; routes.js looks it up on every request.
function wrapHandler(name, wrap) {
  const handler = require(path.join(lib, "handler", name));
  const original = handler.default;
  handler.default = wrap(original);
}

// Fix 1: range ids as strings.
wrapHandler("read-partition-key-ranges", (original) => async (...params) => {
  const body = await original(...params);
  if (body && Array.isArray(body.PartitionKeyRanges)) {
    body.PartitionKeyRanges = body.PartitionKeyRanges.map((range) => ({ ...range, id: String(range.id) }));
  }
  return body;
});

// Fix 2: a missing document is 404 (the handler dereferences the missing document).
wrapHandler("read-document", (original) => async (account, req, res, params) => {
  try {
    return await original(account, req, res, params);
  } catch (err) {
    if (err instanceof TypeError) {
      res.statusCode = 404;
      return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
    }
    throw err;
  }
});

// Fix 3: a query sent to one partition key range carries no partition key.
wrapHandler("query-documents", (original) => async (account, req, res, params) => {
  const headers = req.headers;
  if (headers["x-ms-documentdb-partitionkeyrangeid"] !== undefined && headers["x-ms-documentdb-partitionkey"] === undefined) {
    headers["x-ms-documentdb-query-enablecrosspartition"] = "true";
  }
  return original(account, req, res, params);
});

// Fix 4: advertise the scheme actually served, at the address the client used (its Host
// header), so a client behind a loopback proxy (the fault-injection tests) stays behind it.
wrapHandler("read-meta", (original) => async (...params) => {
  const body = await original(...params);
  const host = params[1] && params[1].headers && params[1].headers.host;
  const plain = (locations) =>
    (locations || []).map((location) => ({
      ...location,
      databaseAccountEndpoint: host
        ? `http://${host}/`
        : String(location.databaseAccountEndpoint).replace(/^https:/, "http:"),
    }));
  return { ...body, writableLocations: plain(body.writableLocations), readableLocations: plain(body.readableLocations) };
});

const { createHttpServer } = require(lib);
const server = createHttpServer({ keepAlive: true });
server.keepAliveTimeout = 65000;
server.listen(args.port, args.host, () => {
  const { port } = server.address();
  console.log(`Ready to accept HTTP connections at ${args.host}:${port}`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
