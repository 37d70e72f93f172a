use std::time::Instant;
use wgpu_gradclip::toy::{native, ToyConfig, Trainer};

fn main() {
    env_logger::init();
    let mut config = ToyConfig::default();
    let args: Vec<String> = std::env::args().collect();
    if args.len() > 2 { config.pretrain_steps = args[1].parse().unwrap(); config.steps = args[2].parse().unwrap(); }
    pollster::block_on(async {
        let (device, queue, name) = native::open_device().await.unwrap();
        let t0 = Instant::now();
        let mut tr = Trainer::new(&device, &queue, config.clone()).await.unwrap();
        println!("setup {:?} on {name} dispatches {:?} clip {}", t0.elapsed(), tr.dispatch_counts(), tr.clip_dispatches());
        let t1 = Instant::now();
        for s in 0..config.pretrain_steps {
            let l = tr.pretrain_step().await.unwrap();
            if s % 50 == 0 || s + 1 == config.pretrain_steps { println!("pre {s} loss {l:.4}"); }
        }
        println!("pretrain {:.1} steps/s", config.pretrain_steps as f64 / t1.elapsed().as_secs_f64());
        tr.begin_flamingo();
        let t2 = Instant::now();
        let e = tr.evaluate().await.unwrap();
        println!("text-only eval {e:?} in {:?}", t2.elapsed());
        let t3 = Instant::now();
        for s in 0..config.steps {
            let st = tr.step().await.unwrap();
            if s % 100 == 0 || s + 1 == config.steps { println!("step {s} loss {:.4} {:?}", st.loss, st.groups); }
        }
        println!("flamingo {:.1} steps/s", config.steps as f64 / t3.elapsed().as_secs_f64());
        let e = tr.evaluate().await.unwrap();
        println!("eval {e:?}");
    });
}
