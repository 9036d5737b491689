import { it } from 'vitest'
import { DatagramSession, decodeBody } from '../../src/protocol/datagram-session.js'
import { Rng } from '../../src/sim/rng.js'
import { EPOCH_MS, Scheduler } from '../../src/sim/scheduler.js'

it('explore ack blackout', async () => {
  const sched = new Scheduler(21)
  const rng = new Rng(5)
  const BL = [300, 20_300]
  let a!: DatagramSession, b!: DatagramSession
  const log: string[] = []
  let got = 0
  const perBlock = new Map<number, number>()
  a = new DatagramSession({ env: sched, packetOverhead: 53, mtu: 400, rateKbps: 2000, maxFrameBytes: 65000, opener: true,
    transmit: (pn, body) => { const d = decodeBody(body); if (d.symbol) perBlock.set(d.symbol.block, (perBlock.get(d.symbol.block) ?? 0) + 1); if (rng.next() < 0.2) return; sched.at(sched.now + 30, () => b.receive(pn, body), true) },
    onFrame: () => {}, onClose: (r) => log.push('a close ' + r) })
  b = new DatagramSession({ env: sched, packetOverhead: 53, mtu: 400, rateKbps: 2000, maxFrameBytes: 65000,
    transmit: (pn, body) => { const t = sched.elapsed; if (rng.next() < 0.2 || (t >= BL[0] && t < BL[1])) return; sched.at(sched.now + 30, () => a.receive(pn, body), true) },
    onFrame: () => { got++ }, onClose: (r) => log.push('b close ' + r) })
  for (let i = 0; i < 10; i++) a.send(new Uint8Array(60000))
  for (const t of [100, 300, 500, 700, 900, 1100, 5000, 28000, 28500]) sched.at(EPOCH_MS + t, () => {
    const A = a as any, B = b as any
    log.push(`${t}: A out ${[...A.out.values()].map((x: any) => `${x.id}:need${x.needed}/infl${x.inflight.length}/esi${x.nextEsi}`).join(' ')} pending ${A.pendingBytes} loss ${A.loss} planned ${A.plannedLoss()} srtt ${A.srtt} rto ${A.rto(sched.clock.now())} | B recvBase ${B.recvBase} decoders ${[...B.decoders.values()].map((d: any) => `${d.block}:${d.needed}`).join(' ')} ready ${[...B.ready.keys()]}`)
    const now = sched.clock.now(); const rto = A.rto(now); log.push(`   wants ${[...A.out.values()].map((x: any) => `${x.id}:live${A.live(x, now, rto)}/w${A.wants(x, now, rto, 0.5)}/w95 ${A.wants(x, now, rto, 0.95)}`).join(' ')} nextSendAt-now ${A.nextSendAt - now} timerAt-now ${A.timerAt - now} next ${A.nextDeadline(now, rto) - now}`);
    log.push(`   perBlock sent ${[...perBlock.entries()].map(([k, v]) => `${k}:${v}`).join(' ')}`)
  })
  await sched.run(EPOCH_MS + 300_000, { stop: () => got >= 10 && a.backlog === 0 })
  log.push(`end ${sched.elapsed} got ${got}`)
  console.log(log.join('\n'))
})
