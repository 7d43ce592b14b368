// Times what one listing of the watch feed sends to the local Cosmos server (16 queries of
// one 100-item partition) as the container fills with other partitions' items: the figures
// of fix 5 in kv-azure/emulator/start.js (docs/providers/cosmos.md). Loopback only.
//
// Usage: node scripts/emulators/cosmos-partition-query.js [kv-azure/emulator/start.js]
const { spawn } = require("child_process");
const port = 18999 + Math.floor(Math.random() * 500);
const base = `http://127.0.0.1:${port}`;
const path = require("path");
const wrapper = process.argv[2] || path.join(__dirname, "..", "..", "kv-azure", "emulator", "start.js");
const server = spawn(process.execPath, [wrapper, "--port", String(port)], { stdio: "ignore" });
const h = (extra = {}) => ({ "content-type": "application/json", "x-ms-version": "2018-12-31", authorization: "x", ...extra });
async function req(method, path, body, headers) {
  const r = await fetch(base + path, { method, headers: h(headers), body: body && JSON.stringify(body) });
  const text = await r.text();
  if (r.status >= 400) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
(async () => {
  for (let i = 0; i < 100; i++) { try { await fetch(base + "/"); break; } catch { await new Promise(r => setTimeout(r, 100)); } }
  await req("POST", "/dbs", { id: "db" });
  await req("POST", "/dbs/db/colls", { id: "c", partitionKey: { paths: ["/pk"], kind: "Hash" } });
  let n = 0;
  const fill = async (to) => {
    while (n < to) {
      const batch = [];
      for (let j = 0; j < 50 && n < to; j++, n++) {
        const pk = `other${n % 64}`;
        batch.push(req("POST", "/dbs/db/colls/c/docs", { id: `d${n}`, pk, k: `k${n}`, v: "eA==" }, { "x-ms-documentdb-partitionkey": JSON.stringify([pk]) }));
      }
      await Promise.all(batch);
    }
  };
  // The watched partition: 100 keys.
  for (let i = 0; i < 100; i++) await req("POST", "/dbs/db/colls/c/docs", { id: `w${i}`, pk: "watched", k: `w${i}`, v: "eA==" }, { "x-ms-documentdb-partitionkey": JSON.stringify(["watched"]) });
  for (const size of [0, 10000, 40000]) {
    await fill(size);
    const t = process.hrtime.bigint();
    const rounds = 16;
    let rows = 0;
    for (let i = 0; i < rounds; i++) {
      const out = await req("POST", "/dbs/db/colls/c/docs", { query: "SELECT c.k, c.exp, c._etag FROM c WHERE c.pk = @pk", parameters: [{ name: "@pk", value: "watched" }] },
        { "content-type": "application/query+json", "x-ms-documentdb-isquery": "true", "x-ms-documentdb-partitionkey": JSON.stringify(["watched"]), "x-ms-max-item-count": "1000" });
      rows += out._count;
    }
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    console.log(`container ${size + 100} items: ${rounds} partition queries (one listing) ${ms.toFixed(0)} ms, ${rows / rounds} rows each`);
  }
  server.kill();
})().catch((e) => { console.error(e); server.kill(); process.exit(1); });
