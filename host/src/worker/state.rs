//! The data a guest's store holds: WASI context, limits, and the state behind
//! the host imports.

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::sandbox::GuestOutput;
use crate::capability::network::{HasNameLookup, NameLookup};
use crate::capability::{HasImports, Imports};

pub struct GuestState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: MemoryLimiter,
    /// A call's time limit in epoch ticks.
    pub call_ticks: u64,
    /// A call's fuel, when `[sandbox] fuel` is set.
    pub fuel: Option<u64>,
    /// The only names the guest may look up (`[sandbox] allow`, `lookup`).
    pub allowed_names: Vec<String>,
    /// What the host imports keep (`log`, `state`, `metrics`).
    pub imports: Imports,
    /// The guest's stderr, kept to explain a trap with the guest's own panic
    /// message.
    pub stderr: GuestOutput,
}

/// The store's memory cap, which also keeps count of the guest's linear memory
/// so the supervisor can report it.
pub struct MemoryLimiter {
    pub limits: StoreLimits,
    /// Bytes of linear memory the guest holds.
    pub memory_bytes: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes = self.memory_bytes + desired - current;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HasImports for GuestState {
    fn imports(&mut self) -> &mut Imports {
        &mut self.imports
    }
}

impl HasNameLookup for GuestState {
    fn name_lookup(&mut self) -> NameLookup<'_> {
        NameLookup {
            sockets: wasmtime_wasi::sockets::WasiSocketsCtxView {
                ctx: self.wasi.sockets(),
                table: &mut self.table,
            },
            allowed: &self.allowed_names,
        }
    }
}
