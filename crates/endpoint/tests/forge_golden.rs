//! The block scripts Ferry forges, against reviewed golden files in
//! `tests/data/forge/`: a change to a template or to the settings shows up here as a
//! diff to review. `FERRY_BLESS=1` rewrites the files. Every script is also checked by
//! `bash -n`.

use std::path::{Path, PathBuf};

use ferry_endpoint::config::EndpointConfig;
use ferry_endpoint::forge::{BlockScript, default_template};

const CASES: &[(&str, &str)] = &[
    (
        "slurm-one-node.sh",
        "[provider]\nkind = \"slurm\"\npartition = \"debug\"\nwalltime = \"00:30:00\"\n",
    ),
    (
        "slurm-four-nodes.sh",
        r##"[provider]
kind = "slurm"
nodes_per_block = 4
max_workers_per_node = 64
partition = "regular"
account = "m1234 (physics)"
qos = "normal"
constraint = "cpu"
exclusive = true
mem_per_node = 200
walltime = "1-00:00:00"
scheduler_options = "#SBATCH --gpus-per-node=4\n#SBATCH --mail-type=NONE"
worker_init = "module load python/3.11\nsource ~/venvs/science/bin/activate"
launcher_options = "--cpu-bind=none"
drain = "5m"
run_dir = "/scratch/ada/ferry runs"
keep_run_dirs = "2d"
app_env_script = "module load gcc/12\nexport OMP_NUM_THREADS=4"
"##,
    ),
    (
        "pbs-one-node.sh",
        "[provider]\nkind = \"pbs\"\nqueue = \"workq\"\nwalltime = \"02:00:00\"\n",
    ),
    (
        "pbs-two-nodes-pbsdsh.sh",
        r##"[provider]
kind = "pbs"
nodes_per_block = 2
queue = "debug"
account = "proj1"
cores_per_node = 32
walltime = "00:45:00"
worker_init = "module load conda\nconda activate science"
"##,
    ),
    (
        "pbs-mpiexec.sh",
        "[provider]\nkind = \"pbs\"\nnodes_per_block = 8\nlauncher = \"mpiexec\"\nlauncher_options = \"--ppn 1\"\nqueue = \"prod\"\nscheduler_options = \"#PBS -l filesystems=home:eagle\"\n",
    ),
];

fn render(config_text: &str) -> String {
    let config =
        EndpointConfig::parse(&format!("url = \"https://ferry.example.org\"\n{config_text}")).unwrap();
    let p = &config.provider;
    BlockScript {
        config: p,
        endpoint_name: "hpc",
        block_id: "7",
        block_dir: Path::new("/home/ada/.ferry/endpoints/hpc/blocks/7"),
        endpoint_address: "login01.cluster.example:50123",
        secret: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        cert_sha256: "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
            .parse()
            .unwrap(),
        manager_bin: Path::new("/home/ada/venvs/ferry/bin/ferry-manager"),
        walltime_secs: None,
    }
    .render(default_template(p.kind))
    .unwrap()
}

#[test]
fn forged_scripts_match_their_reviewed_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/forge");
    let bless = std::env::var_os("FERRY_BLESS").is_some();
    for (name, config) in CASES {
        let script = render(config);
        let check = std::process::Command::new("bash")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, &script).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (FERRY_BLESS=1 writes it)", path.display()));
        assert_eq!(
            script, golden,
            "{name} differs from its golden file (FERRY_BLESS=1 to accept)"
        );
    }
}
