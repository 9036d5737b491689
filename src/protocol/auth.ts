import { utf8 } from './bytes.js'

/** Domain separation for the mailbox-ownership proof: Ed25519(sk, AUTH_DOMAIN ‖ challenge). */
export const AUTH_DOMAIN = utf8('chapar/v1/auth\0')
