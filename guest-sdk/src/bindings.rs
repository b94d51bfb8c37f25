//! Generated WIT bindings. Kept private to the crate's edge: the public API is
//! the SDK's own types, converted to and from these at the call boundary.

/// Bindings of the `source` world. The world's own exports are encoded into
/// the connector crate by the export macro, so that a sink component never
/// claims to export the source interface (and vice versa).
pub mod source {
    wit_bindgen::generate!({
        path: "../wit",
        world: "danube:connect/source",
        pub_export_macro: true,
        export_macro_name: "__export_source_world",
        default_bindings_module: "danube_connect_sdk::__private::source_bindings",
        runtime_path: "danube_connect_sdk::__private::wit_bindgen::rt",
    });
}

/// Bindings of the `sink` world (see [`source`]).
pub mod sink {
    wit_bindgen::generate!({
        path: "../wit",
        world: "danube:connect/sink",
        pub_export_macro: true,
        export_macro_name: "__export_sink_world",
        default_bindings_module: "danube_connect_sdk::__private::sink_bindings",
        runtime_path: "danube_connect_sdk::__private::wit_bindgen::rt",
    });
}

/// Bindings of the `ingress` world (see [`source`]).
pub mod ingress {
    wit_bindgen::generate!({
        path: "../wit",
        world: "danube:connect/ingress",
        pub_export_macro: true,
        export_macro_name: "__export_ingress_world",
        default_bindings_module: "danube_connect_sdk::__private::ingress_bindings",
        runtime_path: "danube_connect_sdk::__private::wit_bindgen::rt",
    });
}

/// Bindings of the `described` world: the `configuration` export every
/// connector built with this SDK adds to its world.
pub mod described {
    wit_bindgen::generate!({
        path: "../wit",
        world: "danube:connect/described",
        pub_export_macro: true,
        export_macro_name: "__export_described_world",
        default_bindings_module: "danube_connect_sdk::__private::described_bindings",
        runtime_path: "danube_connect_sdk::__private::wit_bindgen::rt",
    });
}
