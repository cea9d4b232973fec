/**
 * @nubes/kvm: a QMP client, a QEMU launcher and VM supervisor, consoles, snapshots, hot-plug and live migration.
 *
 * This package is a skeleton: it builds and publishes, and holds no API yet. A typed QMP client, a QEMU/KVM launcher and supervisor (KVM where it works, TCG otherwise), serial consoles, snapshots, hot-plug and live migration.
 *
 * @packageDocumentation
 */

export {};
