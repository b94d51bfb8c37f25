//! An S3-compatible server for the tests: moto's standalone server (PyPI
//! `moto[server]`, from the virtual environment `scripts/setup.sh` makes),
//! on a free loopback port. It stores objects and answers the S3 API,
//! conditional `PutObject` (`If-None-Match: *` → 412) included.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::delta::{python, run_python};
use super::server::{Server, free_port};
use super::target_dir;

pub const ACCESS_KEY: &str = "danube-test-key";
pub const SECRET_KEY: &str = "danube-test-s3cret";
pub const REGION: &str = "us-east-1";

/// A running moto server, stopped on drop.
pub struct S3Server {
    pub port: u16,
    _server: Server,
}

impl S3Server {
    /// Starts the server, its log in `dir`, and creates `bucket`.
    pub fn start(dir: &Path, bucket: &str) -> S3Server {
        let moto = target_dir().join("delta-tools/bin/moto_server");
        python(); // panics naming scripts/setup.sh if the environment is missing
        assert!(
            moto.exists(),
            "{} is missing: run scripts/setup.sh",
            moto.display()
        );
        let port = free_port();
        let server = Server::start(
            "moto_server",
            Command::new(&moto).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            &dir.join("moto.log"),
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        let s3 = S3Server {
            port,
            _server: server,
        };
        run_python(
            r#"
import boto3, sys, json
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2],
                  aws_secret_access_key=sys.argv[3], region_name=sys.argv[4])
s3.create_bucket(Bucket=sys.argv[5])
print("true")
"#,
            &[&s3.endpoint(), ACCESS_KEY, SECRET_KEY, REGION, bucket],
        );
        s3
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// delta-rs's storage options for this server.
    pub fn storage_options(&self) -> Value {
        json!({
            "AWS_ENDPOINT_URL": self.endpoint(),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
            "conditional_put": "etag",
        })
    }
}
