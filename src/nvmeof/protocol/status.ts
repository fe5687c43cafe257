// NVMe completion status as a value: (SCT << 9) | (SC << 1) | (DNR << 15), phase bit 0 over fabrics.

export type NvmeStatus = number;

export function nvmeStatus(sct: number, sc: number, dnr = true): NvmeStatus {
  return ((dnr ? 1 : 0) << 15) | ((sct & 0x7) << 9) | ((sc & 0xff) << 1);
}

export const SUCCESS: NvmeStatus = 0;

export const STATUS = {
  InvalidOpcode: nvmeStatus(0, 0x01),
  InvalidField: nvmeStatus(0, 0x02),
  CommandIdConflict: nvmeStatus(0, 0x03),
  DataTransferError: nvmeStatus(0, 0x04, false),
  InternalError: nvmeStatus(0, 0x06, false),
  InvalidNamespace: nvmeStatus(0, 0x0b),
  CommandSequenceError: nvmeStatus(0, 0x0c),
  DataSglLengthInvalid: nvmeStatus(0, 0x0f),
  SglDescriptorTypeInvalid: nvmeStatus(0, 0x11),
  SglOffsetInvalid: nvmeStatus(0, 0x16),
  KeepAliveTimeoutInvalid: nvmeStatus(0, 0x1a),
  NamespaceWriteProtected: nvmeStatus(0, 0x20),
  TransientTransportError: nvmeStatus(0, 0x22, false),
  LbaOutOfRange: nvmeStatus(0, 0x80),
  CapacityExceeded: nvmeStatus(0, 0x81),
  NamespaceNotReady: nvmeStatus(0, 0x82, false),
  AsyncEventLimitExceeded: nvmeStatus(1, 0x05),
  InvalidLogPage: nvmeStatus(1, 0x09),
  FeatureNotSaveable: nvmeStatus(1, 0x0d),
  ConnectIncompatibleFormat: nvmeStatus(1, 0x80),
  ConnectControllerBusy: nvmeStatus(1, 0x81),
  ConnectInvalidParameters: nvmeStatus(1, 0x82),
  ConnectInvalidHost: nvmeStatus(1, 0x84),
  UnrecoveredReadError: nvmeStatus(2, 0x81),
} as const;

export function statusSct(status: NvmeStatus): number {
  return (status >> 9) & 0x7;
}

export function statusSc(status: NvmeStatus): number {
  return (status >> 1) & 0xff;
}
