"""Benchmarks against unrolled autograd, TorchOpt, JAXopt/Optimistix and Theseus.

``workloads`` defines W1-W3 once for every method; ``methods_*`` wrap each library; ``runner``
checks gradients and times interleaved rounds; ``scaling`` fits growth exponents; ``report``
renders ``docs/benchmarks.md``; ``cli`` adds ``wibergian bench``. Nothing here is imported by
the core.
"""
