"""SliceGPT: Compress Large Language Models by Deleting Rows and Columns (Ashkboos, Croci,
do Nascimento, Hoefler, Hensman, 2024; ICLR 2024; arXiv 2401.15024).

Norm scales are folded into the linears reading them, making every RMSNorm scale-free
(:mod:`baselines.slicegpt.fusion`). The residual stream is then rotated, block by block, into
the principal directions of its calibration activations and its smallest directions are
sliced off: readers lose input columns, writers lose output rows, the embeddings lose columns,
and each residual connection carries ``Q_l^T Q_{l+1}`` (:mod:`baselines.slicegpt.rotate`).
The shortcut maps live in a :class:`baselines.slicegpt.modules.ShortcutBlock` that replaces each
decoder block and keeps its parameter names, so the model saves and reloads through
:func:`twossp.modeling.save_pruned` / :func:`twossp.modeling.load_model`.

Supported: sequential pre-RMSNorm families whose adapter has ``supports_rotation`` (llama,
mistral, qwen2, phi3; see :func:`rotation_model_types`). ``check`` refuses others by name.

Deviations from the paper and the authors' code (microsoft/TransformerCompression):

1. Sparsity accounting. By default (``width="embedding"``, ``protocol=paper``) the width is
   the authors': ``d = int((1 - s) * D)`` rounded down to a multiple of ``round_to`` (8),
   i.e. ``s`` of the embedding dimension, which removes fewer decoder-block parameters than
   ``s`` because of the shortcut matrices; the run records the block sparsity achieved.
   ``width="block_params"`` (``protocol=matched``) instead takes the multiple of ``round_to``
   whose *measured* block sparsity is closest to the target, counting the shortcut matrices
   (parameters of the blocks), the last block's full-width MLP output and shortcut (the head
   is not sliced, the authors' default) and the folded norm scales (gone); when no multiple is
   within ``tolerance`` (0.02; small models) the closest width of any size is used, and
   ``check`` raises ``UnreachableSparsityError`` when even that misses.
   The authors' fusion also subtracts each embedding row's mean (``center_embeddings=True``),
   the mean subtraction a LayerNorm model needs; on an RMSNorm model it changes the function
   (stories260K's dense perplexity moves by about 2 %). ``protocol=matched`` turns it off,
   keeping the fused model equivalent to the original.
2. Embeddings and head are outside the measured number. The embedding matrix loses its sliced
   columns as in the paper; a tied head is untied first (the embedding is rotated by the
   first ``Q``, the head by the last), so a tied model's *total* count grows by
   ``vocab x hidden`` while its blocks shrink.
3. PCA runs on the uncentred second moment ``sum X^T X`` in float64, as in the authors' code,
   without their ``0.01 * mean(diag)`` damping (a multiple of the identity does not change
   eigenvectors); eigenvector signs are fixed (largest entry positive) so results are
   deterministic. Calibration windows carry no padding, so no token masks are needed. The
   final orientation is the PCA basis; the 2SSP port's ``final_orientation="random"`` (a random
   rotation inside the kept subspace, the same function up to rounding) is not used, so the
   seed is unused: nothing is random.
4. The inputs of the next block are recomputed by running the finished (rotated, sliced)
   block in the model's dtype, instead of projecting the unrotated outputs; the two agree up
   to rounding.
5. The scale-free norm divides by the original width (as the authors' ``RMSN``) but keeps the
   model's own epsilon (the authors hard-code 1e-5). Phi-3's residual dropouts are not applied
   inside rotated blocks (identities at inference). Rotated blocks are not Hugging Face
   decoder-layer classes, so ``output_hidden_states=True`` returns no hidden states.
6. Not implemented: LayerNorm families and parallel blocks (phi), the recovery fine-tuning
   and the varying-width slicing schedules of the authors' code. Calibration data are
   whatever the harness provides (2SSP: C4 windows), not the paper's WikiText-2 / Alpaca.
"""

from baselines.slicegpt.fusion import fuse_norms
from baselines.slicegpt.method import SliceGPT, Slicing, choose_dim, rotation_model_types
from baselines.slicegpt.rotate import rotate_and_slice

__all__ = [
    "SliceGPT",
    "Slicing",
    "choose_dim",
    "fuse_norms",
    "rotate_and_slice",
    "rotation_model_types",
]
