#!/usr/bin/env bash
# Grades the security headers of one URL of a running stack with the MDN HTTP Observatory CLI
# (npm @mdn/mdn-http-observatory, a devDependency), and fails if any of its tests that do not
# need HTTPS fails. `make test` runs it on the end-to-end stack's /api/health.
#
#   scripts/observatory.sh http://127.0.0.1:9000/api/health
#
# The package's install scripts download the HSTS preload list and a TLD list, so it is
# installed with --ignore-scripts (package-lock.json) and given an empty preload list here:
# the local host is on no preload list anyway. Over plain HTTP two tests cannot pass: the
# redirection to HTTPS (API Gateway serves HTTPS only) and HSTS (browsers ignore the header on
# HTTP); for HSTS this script checks the header the API sends instead.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${1:?usage: scripts/observatory.sh http://HOST:PORT/PATH}
pkg=node_modules/@mdn/mdn-http-observatory
[ -d "$pkg" ] || npm ci --ignore-scripts --no-audit --no-fund --silent
[ -f "$pkg/conf/hsts-preload.json" ] || echo '{}' > "$pkg/conf/hsts-preload.json"

version=$(node -p "require('./$pkg/package.json').version")
echo "==> MDN HTTP Observatory $version scanning $url"
# The CLI takes a host name and builds http://<host>/ from it; a host with a port and a path
# gives the URL to scan. Its stderr only warns about the CA bundle it did not download.
report=$(node_modules/.bin/mdn-http-observatory-scan "${url#http://}" 2>/dev/null)

REPORT=$report node --input-type=module <<'JS'
const HTTPS_ONLY = new Set(["redirection", "strict-transport-security"]);
const report = JSON.parse(process.env.REPORT);
if (report.error) {
  console.error(`observatory: the scan failed: ${report.error}`);
  process.exit(1);
}
const { scan, tests } = report;
let failed = 0;
for (const [name, t] of Object.entries(tests)) {
  const needsHttps = HTTPS_ONLY.has(name);
  const mark = t.pass ? "pass" : needsHttps ? "n/a " : "FAIL";
  if (!t.pass && !needsHttps) failed += 1;
  const note = needsHttps && !t.pass ? "  (needs HTTPS)" : "";
  console.log(`  ${mark}  ${name.padEnd(30)} ${t.result} (${t.scoreModifier >= 0 ? "+" : ""}${t.scoreModifier})${note}`);
}
const hsts = scan.responseHeaders["strict-transport-security"] ?? "";
const maxAge = Number(/max-age=(\d+)/i.exec(hsts)?.[1] ?? 0);
if (maxAge < 31536000 || !/includesubdomains/i.test(hsts)) {
  console.error(`observatory: Strict-Transport-Security is "${hsts}", expected max-age of a year or more and includeSubDomains`);
  failed += 1;
}
const graded = Object.keys(tests).filter((n) => !HTTPS_ONLY.has(n)).length;
console.log(
  `observatory: HTTP ${scan.statusCode}, grade ${scan.grade} (score ${scan.score}) over plain HTTP; ` +
    `${graded - failed} of ${graded} tests that do not need HTTPS pass; HSTS header sent: ${hsts}`,
);
if (scan.statusCode !== 200) {
  console.error(`observatory: expected HTTP 200, got ${scan.statusCode}`);
  process.exit(1);
}
process.exit(failed === 0 ? 0 : 1);
JS
