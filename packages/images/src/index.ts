/**
 * @nubes/images: a pure TypeScript qcow2 engine, an image inspector, an image store and OCI layers.
 *
 * This package is a skeleton: it builds and publishes, and holds no API yet. A qcow2 reader/writer in TypeScript checked against qemu-img, a safe inspector for untrusted uploads, a Glance-like image store, and OCI container layers stacked with overlayfs.
 *
 * @packageDocumentation
 */

export {};
