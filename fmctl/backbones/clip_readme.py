"""model/README.md of a clip model: how to combine its towers without fmctl.

Written from the saved config, so the snippet names the libraries and the pooling this
model really uses; tests/test_backbone_clip.py runs the same steps with fmctl hidden."""
from __future__ import annotations

from pathlib import Path
from typing import Any

_IMAGE = {"vit": ("timm", "image = timm.create_model('local-dir:model/{folder}', pretrained=True).eval()\n"
                          "config = timm.data.resolve_data_config(model=image)\n"
                          "transform = timm.data.create_transform(**config)\n"
                          "features = image(transform(pil_image.convert('RGB')).unsqueeze(0))      # (1, {width})")}
_POOL = {"mean": "(states * mask[..., None].float()).sum(1) / mask.sum(1, keepdim=True)   # mean over real tokens",
         "cls": "states[:, 0]                                                   # the first token",
         "last": "states[torch.arange(len(states)), mask.sum(1) - 1]             # the last real token"}


def readme(config: dict[str, Any]) -> str:
    image, text = config["image"], config["text"]
    library, image_code = _IMAGE.get(image["family"], ("its family's library", "image = ...  # see model/image"))
    image_code = image_code.format(folder=image["folder"], width=image["features"])
    return f"""# A CLIP-style two-tower model written by fmctl

| part | where | loads with |
|---|---|---|
| image tower ({image['family']}) | `{image['folder']}/` | {library} |
| text tower ({text['family']}) and its tokenizer | `{text['folder']}/` | transformers `AutoModel`, `AutoTokenizer` |
| projections to {config['embed_dim']} dimensions, logit scale (and bias, for the sigmoid loss) | `{config['projections']}` | safetensors |

Without fmctl (pip install torch timm transformers safetensors pillow):

```python
import timm, torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

{image_code}
text = AutoModel.from_pretrained('model/{text['folder']}').eval()
tokenizer = AutoTokenizer.from_pretrained('model/{text['folder']}')
batch = tokenizer(['a status icon: battery low'], padding=True, truncation=True, return_tensors='pt')
states = text(**batch).last_hidden_state
mask = batch['attention_mask']
pooled = {_POOL[text['pooling']]}

own = load_file('model/{config['projections']}')
image_embeds = torch.nn.functional.normalize(features @ own['image_projection.weight'].T, dim=-1)
text_embeds = torch.nn.functional.normalize(pooled @ own['text_projection.weight'].T, dim=-1)
scale = own['logit_scale'].exp().clamp(max={config['logit_scale_max']})
logits_per_image = scale * image_embeds @ text_embeds.T     # + own['logit_bias'] if present (sigmoid loss)
```

The text tower's pooler (if its class has one) is not used and not saved; transformers
initialises it when it loads the folder, and the pooling above never reads it.
"""


def write_readme(folder: Path, config: dict[str, Any]) -> None:
    (Path(folder) / "README.md").write_text(readme(config), encoding="utf-8")
