# Node image for sjc_dist (single runs, sweeps, Ray cluster nodes). Models are not baked in: mount a folder of
# diffusers checkpoints and/or a Hugging Face cache at /models (read offline).
#   docker build -t sjc_dist .
#   docker run --gpus all -v $HOME/models:/models sjc_dist run --config sd --model /models/stable-diffusion-v1-5 --prompt "a hamburger"
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip git \
    && rm -rf /var/lib/apt/lists/*
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HF_HOME=/models/hf HF_HUB_OFFLINE=1 MPLBACKEND=Agg
RUN python3 -m venv $VIRTUAL_ENV
WORKDIR /opt/sjc_dist
COPY pyproject.toml README.md ./
COPY sjc_dist ./sjc_dist
COPY tune_configs ./tune_configs
COPY eval ./eval
RUN pip install --no-cache-dir -e .
# the toy weights ship xz-packed (sjc_dist/toyworld/packed.py): unpack them once, into the image
ENV SJC_CACHE=/opt/sjc_cache
RUN python -c "from sjc_dist.toyworld.packed import unpacked; print(unpacked())"
VOLUME /models
ENTRYPOINT ["sjc"]
CMD ["--help"]
