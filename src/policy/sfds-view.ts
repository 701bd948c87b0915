// The SFDS finding the screen reads for a source: which threshold set it floods under and
// the numbers that made it so.
export interface SfdsFinding {
  set: string;
  flowsPerPeriod: number;
  meanPacketBytes: number;
  durationPeriods: number;
}
