//! MQTT to PostgreSQL through Danube, on the test broker and on the real
//! Danube broker: a real mosquitto, `mosquitto_pub` publishers at QoS 1,
//! `danube-host` running mqtt-source and postgres-sink, a real
//! PostgreSQL 15, and row counts. Needs the Debian packages `mosquitto`,
//! `mosquitto-clients` and `postgresql-15`.

mod common;

use std::time::Duration;

use common::mosquitto::{Mosquitto, finish, publish, publish_paced};
use common::postgres::{self, Postgres, reading};
use common::{
    Host, broker_table, guest, health_detail, wait_subscribed, wait_until_async, write_config,
};
use danube_testkit::BrokerKind;

const PASSWORD: &str = "s3cret-Pg-pass";

danube_testkit::on_both_brokers! {
    /// 2,000 QoS 1 readings from four publishers cross mosquitto,
    /// mqtt-source, a three-partition Danube topic and postgres-sink: each
    /// lands as exactly one row (rows are keyed on the Danube topic and
    /// offset, so a message published twice would show as a second row).
    async fn qos1_readings_from_mqtt_land_in_postgres_once_each(broker: Broker) {
        const TOPIC: &str = "/default/plant";
        const PARTITIONS: u32 = 3;
        const PUBLISHERS: u64 = 4;
        const PER_PUBLISHER: u64 = 500;
        const TOTAL: i64 = (PUBLISHERS * PER_PUBLISHER) as i64;
        // The real broker loses what a reliable subscription falls 256
        // behind on: 400 messages/s in all, over three partitions.
        let rate = match broker.kind() {
            BrokerKind::Test => 0,
            BrokerKind::Real => 100,
        };
        let mqtt = Mosquitto::start();
        let pg = Postgres::start(PASSWORD);
        let dir = tempfile::tempdir().unwrap();
        // The sink must find the partitions when it subscribes.
        broker.create_topic(TOPIC, PARTITIONS, true).await.unwrap();
        let partitions: Vec<String> = (0..PARTITIONS)
            .map(|p| format!("{TOPIC}-part-{p}"))
            .collect();

        let route = postgres::route(
            TOPIC,
            "pg",
            "plant",
            "auto_create = true\nmetadata = { topic = \"danube_topic\", offset = \"danube_offset\" }",
        );
        let sink_config = write_config(
            dir.path(),
            "sink.toml",
            &broker.url(),
            "plant-sink",
            &format!("{}{}", broker_table(&broker), pg.sink_config("", &route)),
        );
        let sink = Host::start(
            &guest("postgres-sink"),
            &sink_config,
            &[("POSTGRES_PASSWORD", PASSWORD)],
        );
        wait_subscribed(&broker, &partitions, "pg", &sink).await;

        let source_config = write_config(
            dir.path(),
            "source.toml",
            &broker.url(),
            "plant-source",
            &format!(
                "[sandbox]\nallow = [\"127.0.0.1:{port}\"]\n\n[mqtt]\nbroker_host = \"127.0.0.1\"\n\
                 broker_port = {port}\nclient_id = \"plant-source\"\n\n[[mqtt.routes]]\n\
                 from = \"plant/#\"\nto = \"{TOPIC}\"\nqos = \"AtLeastOnce\"\npartitions = {PARTITIONS}\n",
                port = mqtt.port
            ),
        );
        let source = Host::start(&guest("mqtt-source"), &source_config, &[]);
        assert!(
            wait_until_async(Duration::from_secs(30), || source
                .log()
                .contains("subscribed to"))
            .await,
            "mqtt-source did not subscribe; log:\n{}",
            source.log()
        );

        let started = std::time::Instant::now();
        let publishers = (0..PUBLISHERS)
            .map(|p| {
                let lines = (p * PER_PUBLISHER..(p + 1) * PER_PUBLISHER)
                    .map(|seq| reading(seq, 1).to_string())
                    .collect();
                let topic = format!("plant/line-{p}");
                match rate {
                    0 => publish(mqtt.port, &topic, 1, lines),
                    rate => publish_paced(mqtt.port, &topic, 1, lines, rate),
                }
            })
            .collect();
        finish(publishers);

        let mut landed = 0;
        let all = wait_until_async(Duration::from_secs(60), || {
            landed = pg.count("SELECT count(*) FROM plant");
            landed >= TOTAL
        })
        .await;
        assert!(
            all,
            "{landed} of {TOTAL} rows; sink {}\nsink log:\n{}\nsource log:\n{}\nmosquitto log:\n{}",
            health_detail(&sink),
            sink.log(),
            source.log(),
            mqtt.log()
        );
        println!(
            "{:?} broker: {TOTAL} readings from MQTT to PostgreSQL in {:?}",
            broker.kind(),
            started.elapsed()
        );
        // A moment for stragglers: a duplicate would land after the rest.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(pg.count("SELECT count(*) FROM plant"), TOTAL, "rows");
        assert_eq!(
            pg.count("SELECT count(DISTINCT seq) FROM plant"),
            TOTAL,
            "readings"
        );
        // Spread over the partitions by MQTT topic (the routing key), each
        // partition's offsets 0..n without a gap.
        let per_partition = pg.query(
            "SELECT string_agg(n::text, ',' ORDER BY danube_topic) FROM \
             (SELECT danube_topic, count(*) AS n FROM plant GROUP BY danube_topic \
              HAVING max(danube_offset) + 1 = count(*)) AS p",
        );
        let counts: Vec<i64> = per_partition
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(
            counts.iter().sum::<i64>(),
            TOTAL,
            "rows per gapless partition: {per_partition}"
        );
        // Each publisher's readings kept their order within their partition.
        assert_eq!(
            pg.count(&format!(
                "SELECT count(*) FROM (SELECT seq, lag(seq) OVER \
                 (PARTITION BY danube_topic, seq / {PER_PUBLISHER} ORDER BY danube_offset) \
                 AS before FROM plant) AS o WHERE before > seq"
            )),
            0,
            "readings out of order"
        );

        assert!(source.terminate(Duration::from_secs(30)).success());
        assert!(sink.terminate(Duration::from_secs(30)).success());
    }
}
