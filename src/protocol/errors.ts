/**
 * Named errors with stable machine-readable codes. The CLI prints `message`
 * on one line; the wire carries `code` in an ERROR frame.
 */
export const ErrorCode = {
  BAD_ADDRESS: 'BAD_ADDRESS',
  BAD_ENVELOPE: 'BAD_ENVELOPE',
  BAD_FRAME: 'BAD_FRAME',
  BAD_SIGNATURE: 'BAD_SIGNATURE',
  DECRYPT_FAILED: 'DECRYPT_FAILED',
  NOT_FOR_ME: 'NOT_FOR_ME',
  TOO_LARGE: 'TOO_LARGE',
  EXPIRED: 'EXPIRED',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  BAD_INPUT: 'BAD_INPUT',
  RETRY_LATER: 'RETRY_LATER',
  INTERNAL: 'INTERNAL',
  TIMEOUT: 'TIMEOUT',
  DISCONNECTED: 'DISCONNECTED',
  /** A relay's rate limit: retry after the ERROR's retry-after. */
  RATE_LIMITED: 'RATE_LIMITED',
  /** A relay's storage quota (mailbox, total or disk): retry after the ERROR's retry-after. */
  QUOTA: 'QUOTA',
  /** The relay does not take this key's uploads or logins (banned, or not on its allowlist). */
  FORBIDDEN: 'FORBIDDEN',
} as const
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

/** Numeric codes for the wire (ERROR frame). Stable: never renumber. */
export const WIRE_ERROR_CODES: Record<ErrorCode, number> = {
  BAD_ADDRESS: 1,
  BAD_ENVELOPE: 2,
  BAD_FRAME: 3,
  BAD_SIGNATURE: 4,
  DECRYPT_FAILED: 5,
  NOT_FOR_ME: 6,
  TOO_LARGE: 7,
  EXPIRED: 8,
  UNAUTHENTICATED: 9,
  BAD_INPUT: 10,
  RETRY_LATER: 11,
  INTERNAL: 12,
  TIMEOUT: 13,
  DISCONNECTED: 14,
  RATE_LIMITED: 15,
  QUOTA: 16,
  FORBIDDEN: 17,
}

/** Refusals a sender keeps the message through and retries later (after the relay's retry-after, if it gave one). */
export const RETRYABLE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['RETRY_LATER', 'RATE_LIMITED', 'QUOTA'])

/**
 * The machine-readable reason a relay logs and counts a refusal under: the
 * vocabulary operators see in metrics and logs.
 */
export function refusalReason(code: ErrorCode): string {
  switch (code) {
    case 'RATE_LIMITED':
      return 'rate-limited'
    case 'QUOTA':
      return 'quota'
    case 'TOO_LARGE':
      return 'too-large'
    case 'EXPIRED':
      return 'expired'
    case 'UNAUTHENTICATED':
      return 'unauthenticated'
    case 'FORBIDDEN':
      return 'forbidden'
    case 'RETRY_LATER':
      return 'busy'
    case 'INTERNAL':
    case 'TIMEOUT':
    case 'DISCONNECTED':
      return 'internal'
    default:
      return 'invalid'
  }
}

export function errorCodeFromWire(n: number): ErrorCode {
  for (const [k, v] of Object.entries(WIRE_ERROR_CODES)) if (v === n) return k as ErrorCode
  return ErrorCode.INTERNAL
}

export class ChaparError extends Error {
  readonly code: ErrorCode
  /** For a refusal that may succeed later: the earliest worth retrying, in ms from now. */
  readonly retryAfterMs: number | undefined
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options)
    this.code = code
    this.retryAfterMs = options?.retryAfterMs
    this.name = 'ChaparError'
  }
}

export class ProtocolError extends ChaparError {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'ProtocolError'
  }
}

export class InputError extends ChaparError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.BAD_INPUT, message, options)
    this.name = 'InputError'
  }
}
