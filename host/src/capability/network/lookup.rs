//! `wasi:sockets/ip-name-lookup` for the guest: only the names in
//! `[sandbox] allow` and `[sandbox] lookup` are looked up.
//!
//! wasmtime-wasi's own implementation resolves any name through the system
//! resolver once lookups are on, and a lookup is a way out: a guest allowed
//! one database could still send what it read as `<data>.attacker.example`
//! to any DNS server on the path. This one refuses every name the operator
//! did not give (address literals need no lookup and pass), and hands the
//! rest to wasmtime-wasi. It is linked over wasmtime-wasi's interface, with
//! the same resource type, so the rest of `wasi:sockets` is unchanged.

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::SocketError;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{
    self, Host, HostResolveAddressStream, ResolveAddressStream,
};
use wasmtime_wasi::p2::bindings::sockets::network::{
    self, ErrorCode, HostNetwork, IpAddress, Network,
};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

/// A store whose data can look names up: wasmtime-wasi's sockets and the
/// names allowed (the projection `add_to_linker` takes is a plain `fn`).
pub trait HasNameLookup: 'static {
    fn name_lookup(&mut self) -> NameLookup<'_>;
}

/// Replaces wasmtime-wasi's name lookup in `linker` with this one.
pub fn add_to_linker<T: HasNameLookup>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = ip_name_lookup::add_to_linker::<T, AllowedNames>(linker, T::name_lookup);
    linker.allow_shadowing(false);
    added
}

struct AllowedNames;

impl HasData for AllowedNames {
    type Data<'a> = NameLookup<'a>;
}

pub struct NameLookup<'a> {
    pub sockets: WasiSocketsCtxView<'a>,
    /// The names of `[sandbox] allow` and `lookup`, lower case.
    pub allowed: &'a [String],
}

/// Whether `name` may be looked up: an address literal, or an allowed name
/// (case and a final dot aside).
fn may_look_up(allowed: &[String], name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok() || {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        allowed.contains(&name)
    }
}

impl Host for NameLookup<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        if !may_look_up(self.allowed, &name) {
            tracing::warn!(
                name = %crate::guest_text::one_line(name, crate::guest_text::NAME),
                "name lookup denied: not a host of [sandbox] allow or lookup"
            );
            return Err(ErrorCode::PermanentResolverFailure.into());
        }
        self.sockets.resolve_addresses(network, name)
    }
}

/// The error conversions the lookup's errors go through, as wasmtime-wasi's.
impl network::Host for NameLookup<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        self.sockets.convert_error_code(error)
    }

    fn network_error_code(
        &mut self,
        error: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        self.sockets.network_error_code(error)
    }
}

impl HostNetwork for NameLookup<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        HostNetwork::drop(&mut self.sockets, network)
    }
}

impl HostResolveAddressStream for NameLookup<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        self.sockets.resolve_next_address(stream)
    }

    fn subscribe(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_names_and_literals_are_looked_up() {
        let allowed = vec!["mqtt.local".to_string()];
        assert!(may_look_up(&allowed, "mqtt.local"));
        assert!(may_look_up(&allowed, "MQTT.Local."));
        assert!(may_look_up(&allowed, "10.1.2.3"));
        assert!(may_look_up(&allowed, "::1"));
        assert!(may_look_up(&allowed, "[::1]"));
        assert!(!may_look_up(&allowed, "c2VjcmV0.attacker.example"));
        assert!(!may_look_up(&allowed, "mqtt.local.attacker.example"));
        assert!(!may_look_up(&[], "localhost"));
    }
}
