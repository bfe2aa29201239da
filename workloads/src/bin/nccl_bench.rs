//! `muri-nccl-bench`: NCCL all-reduce of device buffers through the trainer's own
//! [`NcclCollective::allreduce_sum_device`] path (feature `nccl`), with a sum check and
//! bus bandwidth. One rank when started directly; `mpirun -n G` for G ranks (one GPU each).
//!
//! Each rank fills its buffer with `rank + 1`; after the all-reduce every element must be
//! `G(G+1)/2`. Bandwidths follow nccl-tests: algbw = bytes / time, busbw = algbw × 2(G−1)/G
//! (0 with one rank: nothing crosses a link). Prints one `nccl …` line per size on rank 0.

use std::time::Instant;

use anyhow::{ensure, Context};
use clap::Parser;
use cudarc::driver::{CudaContext, DevicePtr};
use muri_workloads::collective::{mpi_impl::MpiCollective, nccl_impl::NcclCollective};
use muri_workloads::stage::Collective;

#[derive(Parser, Debug)]
#[command(
    name = "muri-nccl-bench",
    about = "NCCL all-reduce of device buffers: check and bandwidth"
)]
struct Args {
    /// Buffer sizes in MiB.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    sizes_mib: Vec<usize>,
    /// Timed all-reduces per size (after 2 untimed ones).
    #[arg(long, default_value_t = 20)]
    iterations: usize,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("muri-nccl-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mpi = MpiCollective::init(1)?;
    let nccl = NcclCollective::init(mpi, 1)?;
    let (rank, size) = (nccl.rank(), nccl.size());
    let devices = CudaContext::device_count()? as usize;
    let ctx = CudaContext::new(local_rank(rank) % devices).context("CUDA context")?;
    let stream = ctx.default_stream();
    for &mib in &args.sizes_mib {
        let n = mib * 1024 * 1024 / 4;
        let mut buf = stream.alloc_zeros::<f32>(n)?;
        let fill = vec![(rank + 1) as f32; n];
        let mut secs = Vec::with_capacity(args.iterations);
        for i in 0..args.iterations + 2 {
            stream.memcpy_htod(&fill, &mut buf)?;
            stream.synchronize()?;
            let (ptr, _guard) = buf.device_ptr(&stream);
            let t0 = Instant::now();
            // SAFETY: `buf` holds `n` f32s on this rank's GPU, written by a completed copy.
            unsafe { nccl.allreduce_sum_device(0, &[(ptr, n)])? };
            if i >= 2 {
                secs.push(t0.elapsed().as_secs_f64());
            }
        }
        let mut host = vec![0f32; n];
        stream.memcpy_dtoh(&buf, &mut host)?;
        stream.synchronize()?;
        let want = (size * (size + 1) / 2) as f32;
        let wrong = host.iter().filter(|&&v| v != want).count();
        ensure!(
            wrong == 0,
            "{mib} MiB: {wrong} of {n} sums differ from {want}"
        );
        secs.sort_by(f64::total_cmp);
        let median = secs[secs.len() / 2];
        let algbw = (n * 4) as f64 / median / 1e9;
        let busbw = algbw * 2.0 * (size as f64 - 1.0) / size as f64;
        if rank == 0 {
            println!(
                "nccl ranks={size} size_mib={mib} median_ms={:.3} algbw_gbs={algbw:.2} busbw_gbs={busbw:.2} check=ok",
                median * 1000.0
            );
        }
    }
    Ok(())
}

fn local_rank(rank: usize) -> usize {
    std::env::var("OMPI_COMM_WORLD_LOCAL_RANK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(rank)
}
