"""The device wording in benchmark JSON: a CPU timing names the processor and vector unit it ran on."""

from __future__ import annotations

from calibstudio.engine.machine import cpu_model, device_name

INTEL = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw\n"
AMD = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n"


def test_cpu_model_names_the_processor_and_its_widest_vector_unit():
    assert cpu_model(INTEL) == "Intel(R) Xeon(R) Platinum 8488C, AVX-512"
    assert cpu_model(AMD) == "AMD EPYC, AVX2"
    assert cpu_model(ARM) == "NEON"  # no model name line on many Arm kernels
    assert cpu_model("") == ""


def test_the_cpu_device_name_keeps_its_prefix_and_adds_this_machines_model():
    name = device_name("cpu")
    assert name.startswith("cpu: ") and " cores" in name
    assert name.endswith(cpu_model()) if cpu_model() else name.endswith(" cores")
