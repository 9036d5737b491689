/**
 * The server side of `bench:loss`'s naive-retry baseline: what a hurried
 * developer would put behind "POST the whole message and retry". Each
 * POST /messages/ID body is written to its own file and fsynced before the
 * 200; a body shorter than its Content-Length (a cut connection) is not
 * kept. Node's default server timeouts, nothing tuned.
 *
 *   node dist/bench/naive-server.js --host IP --port N --data DIR
 *
 * Prints {"listening":true} once it accepts connections.
 */
import { open } from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'

function arg(name: string): string {
  const i = process.argv.indexOf(`--${name}`)
  const v = i >= 0 ? process.argv[i + 1] : undefined
  if (v === undefined) throw new Error(`--${name} is required`)
  return v
}

const dir = arg('data')
const server = http.createServer((req, res) => {
  const m = /^\/messages\/([0-9]+-[0-9]+)$/.exec(req.url ?? '')
  if (req.method !== 'POST' || !m) {
    res.writeHead(404).end()
    return
  }
  const chunks: Buffer[] = []
  req.on('data', (c: Buffer) => chunks.push(c))
  req.on('end', () => {
    const body = Buffer.concat(chunks)
    if (body.length !== Number(req.headers['content-length'])) {
      res.writeHead(400).end()
      return
    }
    void (async () => {
      const f = await open(path.join(dir, m[1]!), 'w')
      try {
        await f.writeFile(body)
        await f.sync()
      } finally {
        await f.close()
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok')
    })().catch(() => res.writeHead(500).end())
  })
})
server.listen(Number(arg('port')), arg('host'), () => process.stdout.write(JSON.stringify({ listening: true }) + '\n'))
