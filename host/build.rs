//! Compiles the real-broker variants of the tests in only when a broker is
//! at hand: `DANUBE_BROKER_BIN` set and non-empty turns on `cfg(real_broker)`.
//! Without it those tests are listed as ignored, with how to get a broker.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=DANUBE_BROKER_BIN");
    println!("cargo::rustc-check-cfg=cfg(real_broker)");
    if std::env::var_os("DANUBE_BROKER_BIN").is_some_and(|bin| !bin.is_empty()) {
        println!("cargo::rustc-cfg=real_broker");
    }
}
