/**
 * What the chip step needs from a reader: the card's ATR on connect and raw APDU exchange. A PC/SC
 * reader (pcsclite) and the simulator's in-process virtual card both implement it.
 */
export interface ApduTransport {
  /** Powers the card in the contact station and returns its ATR. */
  connect(): Promise<{ atr: Buffer }>;
  /** Sends one command APDU, resolves with the response (data ‖ SW1 SW2). */
  transmit(command: Buffer): Promise<Buffer>;
  disconnect(): Promise<void>;
}
