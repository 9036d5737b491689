/**
 * The smoothed round-trip time and its variation (RFC 6298 §2: gains 1/8
 * and 1/4, the first sample seeding both). Shared by the datagram session
 * and the simulator's TCP model.
 */
export class RttEstimator {
  /** Smoothed RTT, ms; undefined until the first sample. */
  srtt: number | undefined
  rttvar = 0

  sample(r: number): void {
    if (this.srtt === undefined) {
      this.srtt = r
      this.rttvar = r / 2
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r)
      this.srtt = 0.875 * this.srtt + 0.125 * r
    }
  }
}
