//! The configuration checks: each refusal with its line, column, field and message.

use super::*;

const GOOD: &str = r#"cluster = "lab"

[datastore]
device = "/dev/mapper/pf-locks"
size_mib = 64

[[host]]
name = "hv1"
address = "192.168.10.1:7790"

[[host]]
name = "hv2"
address = "192.168.10.2:7790"

[[volume]]
name = "vm1"
backing = "/dev/mapper/san-vm1"
policy = "wbp"
replicas = 1
peers = ["hv2"]
cache = { hv1 = "/dev/nvme0n1", hv2 = "/dev/nvme0n1" }

[[volume]]
name = "vm2"
backing = "/dev/mapper/san-vm2"
policy = "wb"
cache = { hv1 = "/dev/nvme0n1" }
"#;

#[test]
fn a_good_file_parses() {
    let c = parse("good.toml", GOOD).unwrap();
    assert_eq!(c.cluster.as_deref(), Some("lab"));
    assert_eq!(c.hosts.len(), 2);
    assert_eq!(c.hosts[1].address.to_string(), "192.168.10.2:7790");
    assert_eq!(c.volumes[0].peers, vec!["hv2".to_string()]);
    assert_eq!(c.volumes[1].replicas, 0);
    assert_eq!(c.datastore.offset_mib, 0);
    assert_eq!((c.hosts[0].id, c.hosts[1].id), (1, 2));
    assert_eq!((c.volumes[0].lock_slot, c.volumes[1].lock_slot), (0, 1));
}

/// `GOOD` with `from` replaced by `to` must be refused with exactly one problem at `line`,
/// on `field`, saying `says`.
fn refused(from: &str, to: &str, line: usize, field: &str, says: &str) {
    assert!(GOOD.contains(from), "{from:?} is not in the good file");
    let src = GOOD.replacen(from, to, 1);
    let e = parse("c.toml", &src).expect_err("accepted");
    // The first problem is the one made; others may follow from it (a host name refused
    // makes its references unknown).
    let p = &e.problems[0];
    assert_eq!(p.line, line, "{e}");
    assert_eq!(p.field, field, "{e}");
    assert!(p.message.contains(says), "{e}");
    assert!(e.to_string().contains(&format!("c.toml:{line}:")), "{e}");
}

#[test]
fn bad_io_timeout() {
    refused(
        "size_mib = 64",
        "size_mib = 64\nio_timeout = 0",
        6,
        "datastore.io_timeout",
        "1 to 60 seconds",
    );
}

#[test]
fn bad_cluster_name() {
    refused(
        "cluster = \"lab\"",
        "cluster = \"lab:1\"",
        1,
        "cluster",
        "is not a cluster name",
    );
}

#[test]
fn host_id_out_of_range() {
    refused(
        "address = \"192.168.10.2:7790\"\n",
        "address = \"192.168.10.2:7790\"\nid = 0\n",
        14,
        "host[1].id",
        "0 is not a host id (1 to 2000)",
    );
}

#[test]
fn host_id_taken() {
    // hv1 has no id: it is host 1.
    refused(
        "address = \"192.168.10.2:7790\"\n",
        "address = \"192.168.10.2:7790\"\nid = 1\n",
        14,
        "host[1].id",
        "host id 1 is already host[0]'s",
    );
}

#[test]
fn lock_slot_beyond_the_datastore() {
    refused(
        "policy = \"wb\"\n",
        "policy = \"wb\"\nlock_slot = 31\n",
        27,
        "volume[1].lock_slot",
        "slot 31 is not on the datastore: 64 MiB hold 31 slot(s)",
    );
}

#[test]
fn lock_slot_taken() {
    refused(
        "policy = \"wb\"\n",
        "policy = \"wb\"\nlock_slot = 0\n",
        27,
        "volume[1].lock_slot",
        "lock slot 0 is already volume[0]'s",
    );
}

#[test]
fn san_group_out_of_range() {
    refused(
        "policy = \"wb\"\n",
        "policy = \"wb\"\nsan_group = 70000\n",
        27,
        "volume[1].san_group",
        "70000 is not a SAN group (1 to 65535; 0 or absent: none)",
    );
}

#[test]
fn syntax_error() {
    refused("size_mib = 64", "size_mib = = 64", 5, "", "");
}

#[test]
fn unknown_field() {
    refused(
        "replicas = 1",
        "replica = 1",
        19,
        "",
        "unknown field `replica`",
    );
}

#[test]
fn missing_field() {
    refused(
        "backing = \"/dev/mapper/san-vm2\"\n",
        "",
        23,
        "",
        "missing field `backing`",
    );
}

#[test]
fn wrong_type() {
    refused("replicas = 1", "replicas = \"one\"", 19, "", "invalid type");
}

#[test]
fn missing_datastore() {
    let src = GOOD.replacen(
        "[datastore]\ndevice = \"/dev/mapper/pf-locks\"\nsize_mib = 64\n",
        "",
        1,
    );
    let e = parse("c.toml", &src).expect_err("accepted");
    assert!(e.to_string().contains("missing field `datastore`"), "{e}");
}

#[test]
fn datastore_not_absolute() {
    refused(
        "\"/dev/mapper/pf-locks\"",
        "\"pf-locks\"",
        4,
        "datastore.device",
        "not an absolute path",
    );
}

#[test]
fn datastore_empty_region() {
    refused(
        "size_mib = 64",
        "size_mib = 0",
        5,
        "datastore.size_mib",
        "at least 1",
    );
}

#[test]
fn bad_host_name() {
    refused(
        "name = \"hv2\"",
        "name = \"hv 2\"",
        12,
        "host[1].name",
        "is not a host name",
    );
}

#[test]
fn duplicate_host() {
    let e = parse(
        "c.toml",
        &GOOD.replacen("name = \"hv2\"", "name = \"hv1\"", 1),
    )
    .expect_err("accepted");
    assert_eq!(e.problems[0].field, "host[1].name", "{e}");
    assert!(
        e.problems[0]
            .message
            .contains("defined twice (also host[0])"),
        "{e}"
    );
}

#[test]
fn bad_address() {
    refused(
        "192.168.10.2:7790",
        "192.168.10.300:7790",
        13,
        "host[1].address",
        "is not IP:PORT",
    );
}

#[test]
fn address_without_port() {
    refused(
        "192.168.10.2:7790",
        "192.168.10.2",
        13,
        "host[1].address",
        "is not IP:PORT",
    );
}

#[test]
fn duplicate_address() {
    refused(
        "192.168.10.2:7790",
        "192.168.10.1:7790",
        13,
        "host[1].address",
        "already host[0]'s",
    );
}

#[test]
fn bad_volume_name() {
    refused(
        "name = \"vm2\"",
        "name = \"vm/2\"",
        24,
        "volume[1].name",
        "\"vm/2\"",
    );
}

#[test]
fn duplicate_volume() {
    refused(
        "name = \"vm2\"",
        "name = \"vm1\"",
        24,
        "volume[1].name",
        "defined twice (also volume[0])",
    );
}

#[test]
fn shared_backing() {
    refused(
        "/dev/mapper/san-vm2",
        "/dev/mapper/san-vm1",
        25,
        "volume[1].backing",
        "already volume[0]'s backing",
    );
}

#[test]
fn bad_policy() {
    refused(
        "policy = \"wb\"",
        "policy = \"writeback\"",
        26,
        "volume[1].policy",
        "is not a policy",
    );
}

#[test]
fn replicas_without_wbp() {
    refused(
        "policy = \"wbp\"",
        "policy = \"wb\"",
        19,
        "volume[0].replicas",
        "replicas must be 0",
    );
}

#[test]
fn wbp_without_replicas() {
    refused(
        "replicas = 1",
        "replicas = 0",
        19,
        "volume[0].replicas",
        "at least 1 replica",
    );
}

#[test]
fn unknown_peer() {
    refused(
        "peers = [\"hv2\"]",
        "peers = [\"hv2\", \"hv9\"]",
        20,
        "volume[0].peers[1]",
        "unknown host \"hv9\" (hosts: hv1, hv2)",
    );
}

#[test]
fn more_replicas_than_peers() {
    refused(
        "replicas = 1",
        "replicas = 2",
        19,
        "volume[0].replicas",
        "2 replicas but 1 peer(s)",
    );
}

#[test]
fn peer_without_cache() {
    refused(
        ", hv2 = \"/dev/nvme0n1\" }",
        " }",
        21,
        "volume[0].cache",
        "peer \"hv2\" holds replicas but has no cache device",
    );
}

#[test]
fn cache_on_unknown_host() {
    refused(
        "cache = { hv1 = \"/dev/nvme0n1\" }",
        "cache = { hv3 = \"/dev/nvme0n1\" }",
        27,
        "volume[1].cache.hv3",
        "unknown host \"hv3\"",
    );
}

#[test]
fn no_hosts() {
    let src = GOOD.split("[[host]]").next().unwrap_or_default();
    let e = parse("c.toml", src).expect_err("accepted");
    assert!(e.to_string().contains("host: no [[host]]"), "{e}");
}

#[test]
fn every_problem_is_reported() {
    let src = GOOD
        .replacen("name = \"hv2\"", "name = \"hv1\"", 1)
        .replacen("policy = \"wb\"", "policy = \"wx\"", 1);
    let e = parse("c.toml", &src).expect_err("accepted");
    assert!(e.problems.len() >= 2, "{e}");
}

#[test]
fn positions_are_one_based() {
    assert_eq!(position("ab\ncd", 0), (1, 1));
    assert_eq!(position("ab\ncd", 4), (2, 2));
}

const PEER: &str = "\n[peer]\ncluster_id = \"00112233445566778899AABBCCDDEEFF\"\nsecret_file = \"/etc/peerflash/cluster.secret\"\n";

/// The peer section: optional; with it, a cluster id, an absolute secret file and IPv4 hosts.
#[test]
fn the_peer_section() {
    assert_eq!(parse("good.toml", GOOD).unwrap().peer, None);
    let with = GOOD.replace("size_mib = 64\n", &format!("size_mib = 64\n{PEER}"));
    let p = parse("peer.toml", &with).unwrap().peer.unwrap();
    assert_eq!(p.cluster_id, "00112233445566778899aabbccddeeff");
    assert_eq!(p.secret_file, "/etc/peerflash/cluster.secret");
    let problems = |src: String| parse("peer.toml", &src).unwrap_err().problems;
    let p = problems(with.replace("00112233445566778899AABBCCDDEEFF", "0011"));
    assert_eq!((p.len(), p[0].field.as_str(), p[0].line), (1, "peer.cluster_id", 8), "{p:?}");
    let p = problems(with.replace("\"/etc/peerflash/cluster.secret\"", "\"cluster.secret\""));
    assert_eq!((p.len(), p[0].field.as_str()), (1, "peer.secret_file"), "{p:?}");
    let p = problems(with.replace("192.168.10.2:7790", "[fd00::2]:7790"));
    assert_eq!((p.len(), p[0].field.as_str()), (1, "host[1].address"), "{p:?}");
    assert!(p[0].message.contains("IPv4 only"), "{p:?}");
    // Without [peer], an IPv6 host is fine (nothing crosses the network yet).
    assert!(parse("good.toml", &GOOD.replace("192.168.10.2:7790", "[fd00::2]:7790")).is_ok());
    let p = problems(with.replace("secret_file", "secret"));
    assert!(p[0].message.contains("unknown field"), "{p:?}");
}
