/**
 * @nubes/quota: per-project limits and usage with atomic reservations that never over-commit.
 *
 * This package is a skeleton: it builds and publishes, and holds no API yet. Registered defaults and per-project limits (flat or strict two-level), usage kept with reservations (`check`, `reserve`, `commit`, `rollback`, `release`) that expire on their own, usage reports and drift repair, all on a `@nubes/core` Store.
 *
 * @packageDocumentation
 */

export {};
