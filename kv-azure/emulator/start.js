#!/usr/bin/env node
// Starts @vercel/cosmosdb-server 1.0.1 on plain HTTP with the fixes the Rust Cosmos DB
// driver needs, applied at runtime (node_modules is never edited):
//
//   1. partition key range ids are sent as strings ("0"), not numbers;
//   2. GET of a missing document answers 404 instead of a 500 TypeError;
//   3. per-range queries (a range id header but no partition key) are allowed across
//      partitions, as the real service does for them;
//   4. the account advertises http:// locations (at the Host the client used) when serving
//      plain HTTP;
//   5. a query sent to one partition (a partition key header) reads that partition's items
//      only, as the real service does; the stock server runs every query over the whole
//      container, so a listing slowed as a test run filled it (measured by
//      kv-azure/emulator/bench-partition-query.js: 16 queries of one 100-item partition,
//      what one listing of the watch feed sends, took 59 ms in a 100-item container, 1.6 s
//      at 10,100 items and 210 s at 40,100; with this fix 31 ms and 27 ms);
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

// Fix 5: each container's items indexed by partition key value, kept by the two methods that
// add and remove items (replace is a delete and a set), and a query sent with a partition key
// header run over that partition's items only.
const Items = require(path.join(lib, "account", "items")).default;
// A missing partition key is its own partition, addressed as `[{}]`; null is another.
const partitionKey = (value) => JSON.stringify(value === undefined ? {} : value);
const partitionOf = (items, data) => partitionKey(items._getPartition(data));
function byPartition(items) {
  if (!items._ridsByPartition) items._ridsByPartition = new Map();
  return items._ridsByPartition;
}
const setItem = Items.prototype._set;
Items.prototype._set = function (data) {
  const stored = setItem.call(this, data);
  const partition = partitionOf(this, data);
  const index = byPartition(this);
  if (!index.has(partition)) index.set(partition, new Set());
  index.get(partition).add(data._rid);
  return stored;
};
const deleteItem = Items.prototype.delete;
Items.prototype.delete = function (idOrRid, partition) {
  const data = this._item("/id", idOrRid, partition).read();
  deleteItem.call(this, idOrRid, partition);
  const rids = byPartition(this).get(partitionOf(this, data));
  if (rids) {
    rids.delete(data._rid);
    if (rids.size === 0) byPartition(this).delete(partitionOf(this, data));
  }
};
const queryItems = Items.prototype.query;
/// `query` over the items whose partition key value is `partition` (a JSON array header's
/// only element); `query` is synchronous, so the swapped item map is never seen by another
/// request.
Items.prototype.queryPartition = function (params, options, partition) {
  const rids = byPartition(this).get(partitionKey(partition)) || new Set();
  const all = this._data;
  const only = new Map();
  for (const rid of rids) only.set(rid, all.get(rid));
  this._data = only;
  try {
    return queryItems.call(this, params, options);
  } finally {
    this._data = all;
  }
};
const readBody = require(path.join(lib, "json")).default;
const readItems = require(path.join(lib, "handler", "_read-items")).default;
wrapHandler("query-documents", (original) => async (account, req, res, params) => {
  let partition;
  try {
    const header = JSON.parse(req.headers["x-ms-documentdb-partitionkey"]);
    if (Array.isArray(header) && header.length === 1) partition = header[0];
  } catch (err) {
    partition = undefined;
  }
  if (partition === undefined) return original(account, req, res, params);
  return readItems(req, res, "Documents", async ({ continuation, maxItemCount }) => {
    const body = await readBody(req);
    if (!body.query) {
      res.statusCode = 400;
      return { message: "missing query" };
    }
    const collection = account.database(params.dbId).collection(params.collId);
    try {
      return collection.documents.queryPartition(body, { continuation, maxItemCount }, partition);
    } catch (err) {
      if (err.badRequest) {
        res.statusCode = 400;
        return { message: err.message };
      }
      throw err;
    }
  });
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
