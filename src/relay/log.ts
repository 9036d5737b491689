/**
 * The relay's structured log: pino JSON lines on stderr, written
 * synchronously so the last lines before a crash or SIGKILL are not lost in
 * a buffer. At the default level (info) no line carries message content or
 * a public key; envelope ids and sizes appear only with `log.envelopes`.
 */
import { pino, type Logger } from 'pino'
import type { RelayConfig } from './config.js'

export type { Logger }

export function relayLogger(level: RelayConfig['log']['level'], destination = 2): Logger {
  return pino(
    {
      level,
      base: undefined, // no pid/hostname on every line; the process manager adds them
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ fd: destination, sync: true }),
  )
}
