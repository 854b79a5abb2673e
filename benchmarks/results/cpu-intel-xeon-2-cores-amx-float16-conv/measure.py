# python benchmarks/results/cpu-intel-xeon-2-cores-amx-float16-conv/measure.py > result.json  (quiet machine)
import json, platform, time, torch
out = {"device": "cpu Intel(R) Xeon(R) Processor 2 cores (AMX)", "torch": torch.__version__, "threads": torch.get_num_threads(),
       "what": "a 3x3 conv, 16 -> 16 channels, 16x16 images, batch 256, channels-last, no bias: forward + backward, "
               "one warm-up call, then the mean of 2 calls", "seconds": {}}
for name, dt in [("float16", torch.float16), ("bfloat16", torch.bfloat16), ("float32", torch.float32)]:
    x = torch.randn(256, 16, 16, 16).to(dt).to(memory_format=torch.channels_last).requires_grad_()
    c = torch.nn.Conv2d(16, 16, 3, padding=1, bias=False).to(dt).to(memory_format=torch.channels_last)
    c(x).sum().backward(); t = time.perf_counter()
    for _ in range(2): c(x).sum().backward()
    out["seconds"][name] = round((time.perf_counter() - t) / 2, 4)
print(json.dumps(out, indent=1))
