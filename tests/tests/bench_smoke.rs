//! The XDP benchmark in quick mode: it runs, prints a figure for every row, and leaves no pinned
//! state behind. Nothing here asserts a speed.
use std::process::Command;

use gate_tests::daemon::bin;

#[test]
fn quick_xdp_bench_prints_every_row_and_cleans_up() {
    let before: Vec<_> = std::fs::read_dir("/sys/fs/bpf").unwrap().flatten().map(|e| e.file_name()).collect();
    let out = Command::new(bin("gate-bench-xdp")).arg("--quick").output().expect("run gate-bench-xdp");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| 1")).collect();
    assert_eq!(rows.len(), 6, "2 lease counts x 3 packets:\n{stdout}");
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let gate_ns: u64 = cells[3].parse().unwrap_or_else(|_| panic!("a number in {row}"));
        assert!(gate_ns > 0, "{row}");
    }
    let after: Vec<_> = std::fs::read_dir("/sys/fs/bpf").unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(before, after, "no pins left behind");
}
