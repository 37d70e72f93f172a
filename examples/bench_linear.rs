use std::time::Instant;
use wgpu_gradclip::toy::kernels::*;
use wgpu_gradclip::toy::native;
fn main() {
    pollster::block_on(async {
        let (device, queue, _) = native::open_device().await.unwrap();
        let k = Kernels::new(&device).await.unwrap();
        let mem = Memory::new(&k, 4 << 20, 1024).unwrap();
        for &(m, kk, n, reps) in &[
            (8u32, 64u32, 64u32, 20usize),
            (288, 64, 64, 20),
            (288, 64, 256, 20),
            (576, 64, 128, 20),
            (288, 256, 64, 20),
        ] {
            let p = LinearParams::new(
                m,
                kk,
                n,
                RowMap::dense(0, kk),
                1 << 20,
                RowMap::dense(2 << 20, n),
            );
            let ops = vec![Dispatch::linear(p); reps];
            let prog = Program::new(&k, &ops);
            for round in 0..3 {
                let t = Instant::now();
                let mut enc = device.create_command_encoder(&Default::default());
                prog.record(&k, &mem, &mut enc);
                queue.submit([enc.finish()]);
                device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
                let dt = t.elapsed().as_secs_f64() / reps as f64;
                if round == 2 {
                    println!(
                        "m {m} k {kk} n {n}: {:.3} ms/dispatch, {:.2} GFLOP/s",
                        dt * 1e3,
                        2.0 * (m * kk * n) as f64 / dt / 1e9
                    );
                }
            }
        }
        let ops = vec![
            Dispatch::sum_rows(SumRowsParams {
                x_off: 0,
                groups: 1,
                rows: 1,
                n: 4,
                y_off: 64,
                accumulate: 0,
                _pad: [0; 2]
            });
            50
        ];
        let prog = Program::new(&k, &ops);
        for _ in 0..3 {
            let t = Instant::now();
            let mut enc = device.create_command_encoder(&Default::default());
            prog.record(&k, &mem, &mut enc);
            queue.submit([enc.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            println!(
                "tiny dispatch {:.1} us",
                t.elapsed().as_secs_f64() / 50.0 * 1e6
            );
        }
    });
}
