#!/bin/bash
# Two machines, 8 GPUs each, without a scheduler: run this on every machine with its own
# NODE_RANK (0 on the head). HEAD is an address all machines reach; RUN_DIR is shared storage.
set -euo pipefail
HEAD=${HEAD:?set HEAD to the head node address}
NODE_RANK=${NODE_RANK:?set NODE_RANK (0 on the head node)}
NNODES=${NNODES:-2}
GPUS=${GPUS:-8}
RUN_DIR=${RUN_DIR:-/shared/runs/shapes3d}

torchrun --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
  --master_addr="$HEAD" --master_port=29500 \
  -m factordiff.cli train shapes3d data.root=/shared/data/shapes3d \
  train.mixed_precision=bf16 data.num_workers=8 --out "$RUN_DIR"

# The same with accelerate (reads the same torch.distributed environment):
#   accelerate launch --multi_gpu --num_machines 2 --machine_rank "$NODE_RANK" \
#     --main_process_ip "$HEAD" --main_process_port 29500 --num_processes 16 \
#     -m factordiff.cli train shapes3d ... --out "$RUN_DIR"
