// Wire constants of NVMe/TCP 1.0, NVMe-oF and the NVMe base spec, named as the specs name them.

export const PDU_TYPE = {
  ICReq: 0x00,
  ICResp: 0x01,
  H2CTermReq: 0x02,
  C2HTermReq: 0x03,
  CapsuleCmd: 0x04,
  CapsuleResp: 0x05,
  H2CData: 0x06,
  C2HData: 0x07,
  R2T: 0x09,
} as const;

export const PDU_FLAG = {
  HDGSTF: 0x01,
  DDGSTF: 0x02,
  LAST_PDU: 0x04,
  SUCCESS: 0x08,
} as const;

/** Common header bytes of every PDU. */
export const PDU_COMMON_HEADER_BYTES = 8;
export const IC_PDU_BYTES = 128;
export const CAPSULE_CMD_HLEN = 72;
export const DATA_PDU_HLEN = 24; // H2CData, C2HData, R2T, CapsuleResp, TermReq
export const DIGEST_BYTES = 4;
export const SQE_BYTES = 64;
export const CQE_BYTES = 16;

/** C2HTermReq fatal error status (NVMe/TCP §3.6.2.9). */
export const FES = {
  InvalidHeaderField: 0x01,
  PduSequenceError: 0x02,
  HeaderDigestError: 0x03,
  DataTransferOutOfRange: 0x04,
  DataTransferLimitExceeded: 0x05,
  UnsupportedParameter: 0x06,
} as const;

export const OPC_FABRICS = 0x7f;

export const FCTYPE = {
  PropertySet: 0x00,
  Connect: 0x01,
  PropertyGet: 0x04,
  AuthSend: 0x05,
  AuthReceive: 0x06,
  Disconnect: 0x08,
} as const;

export const ADMIN_OPC = {
  DeleteIoSq: 0x00,
  CreateIoSq: 0x01,
  GetLogPage: 0x02,
  DeleteIoCq: 0x04,
  CreateIoCq: 0x05,
  Identify: 0x06,
  Abort: 0x08,
  SetFeatures: 0x09,
  GetFeatures: 0x0a,
  AsyncEventRequest: 0x0c,
  KeepAlive: 0x18,
} as const;

export const IO_OPC = {
  Flush: 0x00,
  Write: 0x01,
  Read: 0x02,
  WriteZeroes: 0x08,
  DatasetManagement: 0x09,
} as const;

export const CNS = {
  Namespace: 0x00,
  Controller: 0x01,
  ActiveNamespaces: 0x02,
  NamespaceDescriptors: 0x03,
  CsiNamespace: 0x05,
  CsiController: 0x06,
  CsiActiveNamespaces: 0x07,
} as const;

export const LID = {
  ErrorInformation: 0x01,
  Smart: 0x02,
  FirmwareSlot: 0x03,
  ChangedNamespaces: 0x04,
  CommandEffects: 0x05,
  Discovery: 0x70,
} as const;

export const FID = {
  VolatileWriteCache: 0x06,
  NumberOfQueues: 0x07,
  AsyncEventConfiguration: 0x0b,
  KeepAliveTimer: 0x0f,
  HostIdentifier: 0x81,
} as const;

/** SGL descriptor type byte (SQE byte 39). */
export const SGL = {
  DataBlockOffset: 0x01, // in-capsule data
  TransportDataBlock: 0x5a, // data by R2T/H2CData or C2HData
} as const;

export const PROPERTY = {
  CAP: 0x00,
  VS: 0x08,
  CC: 0x14,
  CSTS: 0x1c,
} as const;

export const DISCOVERY_NQN = 'nqn.2014-08.org.nvmexpress.discovery';

/** AEN completion DW0 values (type 2 = notice). */
export const AEN = {
  NamespaceAttributeChanged: 0x00040002,
  DiscoveryLogChanged: 0x0070f002,
} as const;

export const AEC_MASK = {
  NamespaceAttribute: 1 << 8,
  DiscoveryLogChange: 1 << 31,
} as const;
