//! Test certificates made with the `openssl` CLI: CAs and server
//! certificates for 127.0.0.1 signed by them.

use std::path::Path;
use std::process::Command;

/// Runs `openssl` with `args` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` making a new P-256 key, unencrypted, into `key`; `args`
/// say what to make with it (a self-signed certificate or a request).
fn new_key(dir: &Path, key: &str, args: &[&str]) {
    let new_key = [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
    ];
    openssl(dir, &[&new_key[..], args].concat());
}

/// A CA (`NAME.pem`, `NAME.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    let subject = format!("/CN={name}");
    new_key(
        dir,
        &key,
        &[
            "-x509",
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
}

/// A CA `ca.pem` and a server certificate for 127.0.0.1 and localhost signed
/// by it (`server.pem`, `server.key`), in `dir`.
pub fn make_server_certificate(dir: &Path) {
    make_ca(dir, "ca");
    signed(
        dir,
        "server",
        "127.0.0.1",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
}

/// A client certificate for the user `name` (its common name), signed by
/// the CA `ca.pem` in `dir`: `NAME.pem`, `NAME.key`.
pub fn make_client_certificate(dir: &Path, name: &str) {
    signed(dir, name, name, "extendedKeyUsage=clientAuth\n");
}

/// `NAME.pem` and `NAME.key` in `dir`: a certificate for `common_name` with
/// the extensions `extensions`, signed by the CA `ca.pem`.
fn signed(dir: &Path, name: &str, common_name: &str, extensions: &str) {
    let (key, csr, ext, cert) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.pem"),
    );
    let subject = format!("/CN={common_name}");
    new_key(dir, &key, &["-out", &csr, "-subj", &subject]);
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}
