/** Image formats the engine reads and writes. */
export type ImageFormat = 'qcow2' | 'raw';

/** How a run of guest bytes is stored in one layer. */
export type ExtentKind = 'data' | 'zero' | 'unallocated';

/** A run of guest bytes with one allocation state in one image (not its backing). */
export interface Extent {
  /** Guest offset of the run. */
  offset: number;
  /** Length of the run in bytes. */
  length: number;
  /** `data`: stored here; `zero`: reads as zeros here; `unallocated`: read from the backing file. */
  kind: ExtentKind;
  /** Host offset of the data, when it is stored uncompressed in this file. */
  hostOffset?: number;
  /** True for a compressed cluster. */
  compressed?: boolean;
}

/** Progress of a long operation: bytes done out of bytes in all. */
export interface ProgressEvent {
  /** The operation reporting (`convert`, `commit`, `rebase`, `compare`, `check`). */
  operation: string;
  done: number;
  total: number;
}

/** A callback for {@link ProgressEvent}s. */
export type ProgressListener = (event: ProgressEvent) => void;

/**
 * An open disk image: a qcow2 file (with its backing chain) or a raw file. Offsets and lengths are
 * guest bytes; reads past the virtual size are refused.
 */
export interface DiskImage {
  /** The path the image was opened with. */
  readonly path: string;
  /** The image's format. */
  readonly format: ImageFormat;
  /** The guest-visible size in bytes. */
  readonly virtualSize: number;
  /** The opened backing image, if there is one. */
  readonly backing: DiskImage | undefined;
  /** Whether writes are refused. */
  readonly readOnly: boolean;
  /** Reads guest bytes, through the backing chain. */
  read(offset: number, length: number): Promise<Buffer>;
  /** Writes guest bytes (copy-on-write from the backing chain where needed). */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes a range read as zeros, as zero clusters where whole clusters are covered. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Frees whole clusters within the range (partial clusters are left as they are, as in QEMU). */
  discard(offset: number, length: number): Promise<void>;
  /** The allocation state of the run starting at `offset`, at most `length` bytes long. */
  status(offset: number, length: number): Promise<Extent>;
  /** Flushes everything written to stable storage. */
  flush(): Promise<void>;
  /** Closes this image and its backing chain. */
  close(): Promise<void>;
}
