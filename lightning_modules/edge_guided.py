"""DeepSC-Edge (Yin 2024, Part III, Table 3): UNet, ET-UNet, Guided and S-Guided ET-UNet, each ± FTL.

One LightningModule, configured by ``variant`` and ``overlap``:

| variant    | network        | loss                                                        | eq.   |
|------------|----------------|-------------------------------------------------------------|-------|
| "unet"     | smp UNet       | L_seg = BCE + Dice                                          | (1)   |
| "et-unet"  | ET-UNet        | L_seg + λ L_edge  (EGM edges vs Canny(Y))                   | (2,3) |
| "guided"   | ET-UNet        | L_seg + λ L_edge + γ L_edge*  (prediction's edges vs Canny(Y)) | (4,5) |
| "s-guided" | ET-UNet        | L_seg + λ L_edge + L_edge* / (max(L_seg − θ, 0) + 1)         | (6)   |

``overlap="ftl"`` replaces Dice by the Focal Tversky loss in every term (eqs. 7-8). Multi-class masks
(``num_classes > 1``) use cross-entropy + multi-class Dice/FTL, and edges of every class boundary.
Ignored pixels of a user's masks are neither learnt nor scored: every term leaves them out, and the edge
target draws no edge along an ignore region (``edge_losses.edge_targets``).

Note on Yin 2024's θ = 3: L_seg = BCE + Dice stays below ~2 from the first step, so the soft weight is 1
throughout and S-Guided trains exactly like Guided with γ = 1 (same seed: same numbers). The weight is
logged (``train_guidance_weight``) so this can be seen rather than assumed.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch

from matcv.lightning_modules.edge_losses import (
    DEFAULT_FTL_ALPHA,
    DEFAULT_FTL_BETA,
    DEFAULT_GAMMA,
    DEFAULT_LAMBDA,
    DEFAULT_THETA,
    RegionLoss,
    edge_targets,
    soft_edge_map,
    soft_guidance_weight,
)
from matcv.lightning_modules.edge_guided_nets import ETUNet
from matcv.lightning_modules.segmentation import SegmentationEvaluation, load_encoder_weights

VARIANTS = ("unet", "et-unet", "guided", "s-guided")
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)  # smp's UNet default


class EdgeGuidedSegmentationTask(SegmentationEvaluation):
    learns_ignored_pixels = True  # every loss term leaves IGNORE_INDEX pixels out

    def __init__(
        self,
        variant: str = "unet",
        overlap: str = "dice",
        encoder_name: str = "resnet18",
        encoder_weights_path: str | None = None,
        in_channels: int = 3,
        num_classes: int = 1,
        class_names: list[str] | None = None,
        lr: float = 1e-3,
        edge_lambda: float = DEFAULT_LAMBDA,
        guidance_gamma: float = DEFAULT_GAMMA,
        soft_theta: float = DEFAULT_THETA,
        ftl_alpha: float = DEFAULT_FTL_ALPHA,
        ftl_beta: float = DEFAULT_FTL_BETA,
        decoder_channels: list[int] | None = None,
    ) -> None:
        super().__init__(num_classes, class_names)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.save_hyperparameters()
        channels = tuple(decoder_channels or DEFAULT_DECODER_CHANNELS)
        if variant == "unet":
            self.net = smp.Unet(encoder_name, encoder_weights=None, in_channels=in_channels, classes=num_classes,
                                decoder_channels=list(channels))
        else:
            self.net = ETUNet(encoder_name, in_channels, num_classes, channels)
        if encoder_weights_path:
            load_encoder_weights(self.net.encoder, encoder_weights_path)
        self.region_loss = RegionLoss(num_classes, overlap, ftl_alpha, ftl_beta)
        self.edge_loss = RegionLoss(1, overlap, ftl_alpha, ftl_beta)  # eq. (3): EGM logits vs Canny(Y)
        self.prediction_edge_loss = RegionLoss(1, overlap, ftl_alpha, ftl_beta, from_logits=False)  # eq. (4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Segmentation logits only (what evaluation and prediction need)."""
        out = self.net(images)
        return out[0] if isinstance(out, tuple) else out

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid() if self.num_classes == 1 else logits.softmax(dim=1)

    def loss_terms(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(segmentation logits, {"loss": total, and each term of Table 3's equation for this variant})."""
        return self.terms_of(self.net(images), mask)

    def terms_of(self, out: torch.Tensor | tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``loss_terms`` of the network's output: segmentation logits, or (logits, edge logits) of ET-UNet."""
        if not isinstance(out, tuple):  # plain UNet, eq. (1)
            segmentation_loss = self.region_loss(out, mask)
            return out, {"loss": segmentation_loss, "loss_seg": segmentation_loss}
        logits, edge_logits = out
        segmentation_loss = self.region_loss(logits, mask)
        edge_target = edge_targets(mask, self.num_classes)  # IGNORE_INDEX near ignored pixels
        edge_loss = self.edge_loss(edge_logits, edge_target)
        terms = {"loss_seg": segmentation_loss, "loss_edge": edge_loss}
        total = segmentation_loss + self.hparams.edge_lambda * edge_loss  # eq. (2)
        if self.hparams.variant in ("guided", "s-guided"):
            prediction_edges = soft_edge_map(self.probabilities(logits))
            prediction_edge_loss = self.prediction_edge_loss(prediction_edges, edge_target)
            if self.hparams.variant == "guided":  # eq. (5)
                weight = torch.as_tensor(self.hparams.guidance_gamma, device=logits.device)
            else:  # eq. (6)
                weight = soft_guidance_weight(segmentation_loss, self.hparams.soft_theta)
            total = total + weight * prediction_edge_loss
            terms |= {"loss_edge_star": prediction_edge_loss, "guidance_weight": weight}
        return logits, {"loss": total, **terms}

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.region_loss(logits, target)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, terms = self.loss_terms(batch["image"], batch["mask"])
        n = len(batch["image"])
        for name, value in terms.items():
            self.log(f"train_{name}", value, batch_size=n, on_epoch=True, on_step=False, sync_dist=True,
                     prog_bar=name == "loss")
        return terms["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits, terms = self.loss_terms(batch["image"], batch["mask"])
        self.log_validation(logits, batch, terms["loss"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
