"""Benchmark inputs: a varied set of photo-like images (written to disk once) and multilingual texts.

Images mix what users index: 12 MP phone photos (landscape and portrait), HD frames, web images, thumbnails, a
panorama, a transparent PNG, a palette graphic and a grayscale scan; :data:`PHOTO_GROUPS` are the files of the
photos scenario (12 and 48 MP phone JPEGs, 1080p frames, 2560x1440 PNG screenshots). They are synthetic (smooth
colour fields, shapes and sensor-like noise; screenshots of flat panels and text-like runs) so decoding and resizing
cost what real photos and screens cost. Texts are captions,
search queries and short passages in 11 languages; the same sentences train the benchmark tokenizer.
"""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np
from PIL import Image, ImageDraw

from bge_siglip_vectorizer.testing.images import photo_image

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[function(x) for x in items]`` on a thread pool (PIL and numpy release the GIL), in order. Making inputs
    is not what is measured; on a big machine (a GPU box) this keeps it from taking longer than the timed runs."""
    items = list(items)
    if len(items) < 2:
        return [function(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1, 16)) as pool:
        return list(pool.map(function, items))


@dataclass(frozen=True)
class ImageSpec:
    width: int
    height: int
    mode: str
    fmt: str  # file format on disk: JPEG or PNG
    kind: str


# One cycle of the varied set; a set of n images walks this list with a new seed per image.
VARIED: tuple[ImageSpec, ...] = (
    ImageSpec(4032, 3024, "RGB", "JPEG", "12 MP phone photo"),
    ImageSpec(1920, 1080, "RGB", "JPEG", "full-HD frame"),
    ImageSpec(800, 600, "RGB", "JPEG", "web image"),
    ImageSpec(512, 512, "RGBA", "PNG", "transparent PNG"),
    ImageSpec(3024, 4032, "RGB", "JPEG", "12 MP portrait photo"),
    ImageSpec(1280, 720, "RGB", "JPEG", "HD frame"),
    ImageSpec(300, 200, "RGB", "JPEG", "thumbnail"),
    ImageSpec(1000, 1000, "P", "PNG", "palette graphic"),
    ImageSpec(1024, 768, "RGB", "JPEG", "web image"),
    ImageSpec(2400, 600, "RGB", "JPEG", "panorama"),
    ImageSpec(640, 480, "RGB", "JPEG", "VGA photo"),
    ImageSpec(1200, 1600, "L", "JPEG", "grayscale scan"),
)
# --quick: the same kinds, at most ~800 px, so CI spends its seconds on the harness, not on PIL.
QUICK = tuple(
    ImageSpec(max(16, s.width // 5), max(16, s.height // 5), s.mode, s.fmt, s.kind) for s in VARIED
)


def photo_like(spec: ImageSpec, seed: int) -> Image.Image:
    """A deterministic synthetic photo (smooth colour field + shapes + noise) in ``spec.mode``: the core's test
    generator, so the benchmark and the fidelity tests see the same kind of picture."""
    return photo_image(spec.width, spec.height, spec.mode, seed)


def screenshot_like(spec: ImageSpec, seed: int) -> Image.Image:
    """A deterministic synthetic screenshot: flat panels, title bars, lines of text-like glyph runs and one photo,
    so PNG compresses it the way it compresses real screens (large flat areas, sharp edges)."""
    rng = np.random.default_rng(seed)
    w, h = spec.width, spec.height
    image = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(225, 250, size=3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):  # windows
        x0, y0 = int(rng.integers(0, w * 3 // 4)), int(rng.integers(0, h * 3 // 4))
        x1, y1 = min(w, x0 + int(rng.integers(w // 5, w // 2))), min(h, y0 + int(rng.integers(h // 5, h // 2)))
        draw.rectangle((x0, y0, x1, y1), fill=(255, 255, 255), outline=(180, 180, 190))
        draw.rectangle((x0, y0, x1, y0 + max(8, h // 40)), fill=tuple(int(c) for c in rng.integers(40, 120, size=3)))
        line = max(6, h // 90)
        for y in range(y0 + 3 * line, y1 - line, 2 * line):  # text: runs of dark "words"
            x = x0 + line
            while x < x1 - 4 * line:
                word = int(rng.integers(2, 9)) * line // 2
                draw.rectangle((x, y, min(x + word, x1 - line), y + line), fill=(30, 30, 40))
                x += word + line
    photo = photo_like(ImageSpec(max(16, w // 4), max(16, h // 4), "RGB", "PNG", "photo"), seed)
    image.paste(photo, (w // 2, h // 2))
    return image


def render(spec: ImageSpec, seed: int) -> Image.Image:
    """The synthetic picture for ``spec``: a screenshot for screenshot kinds, a photo otherwise."""
    return screenshot_like(spec, seed) if "screenshot" in spec.kind else photo_like(spec, seed)


# The photos users have, by group (the photos scenario and ingest read these files).
PHOTO_GROUPS: dict[str, tuple[ImageSpec, ...]] = {
    "12 MP JPEG": (ImageSpec(4032, 3024, "RGB", "JPEG", "12 MP phone photo"),
                   ImageSpec(3024, 4032, "RGB", "JPEG", "12 MP portrait photo")),
    "48 MP JPEG": (ImageSpec(8064, 6048, "RGB", "JPEG", "48 MP phone photo"),),
    "1080p JPEG": (ImageSpec(1920, 1080, "RGB", "JPEG", "1080p video frame"),),
    "1440p PNG": (ImageSpec(2560, 1440, "RGB", "PNG", "2560x1440 screenshot"),),
}


def photo_files(directory: Path, per_group: int, quick: bool, seed: int = 500) -> dict[str, list[Path]]:
    """``per_group`` files of each of :data:`PHOTO_GROUPS` (``--quick``: a fifth of the size), created once."""
    files: dict[str, list[Path]] = {}
    for g, (group, kinds) in enumerate(PHOTO_GROUPS.items()):
        specs = [kinds[i % len(kinds)] for i in range(per_group)]
        if quick:
            specs = [ImageSpec(max(16, s.width // 5), max(16, s.height // 5), s.mode, s.fmt, s.kind) for s in specs]
        files[group] = image_files(directory, per_group, quick, seed=seed + 100 * g, specs=specs)
    return files


def specs_for(n: int, quick: bool) -> list[ImageSpec]:
    cycle = QUICK if quick else VARIED
    return [cycle[i % len(cycle)] for i in range(n)]


def image_files(directory: Path, n: int, quick: bool, seed: int = 0, specs: list[ImageSpec] | None = None) -> list[Path]:
    """``n`` image files in ``directory`` (created once, reused by later runs)."""
    directory.mkdir(parents=True, exist_ok=True)

    def ensure(numbered: tuple[int, ImageSpec]) -> Path:
        i, spec = numbered
        ext = "jpg" if spec.fmt == "JPEG" else "png"
        path = directory / f"{seed + i:04d}_{spec.width}x{spec.height}_{spec.mode}.{ext}"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            render(spec, seed + i).save(tmp, format=spec.fmt, **({"quality": 90} if spec.fmt == "JPEG" else {}))
            tmp.rename(path)
        return path

    return parallel_map(ensure, enumerate(specs or specs_for(n, quick)))


def decoded(paths: list[Path]) -> list[Image.Image]:
    """The files decoded into memory (pixels loaded, file closed), as a user would hand PIL images over."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            image.load()
            images.append(image.copy())
    return images


def uniform_images(n: int, width: int, height: int, seed: int = 1000) -> list[np.ndarray]:
    """``n`` distinct same-size RGB photos as uint8 arrays (one patch count, so batches have no padding)."""
    spec = ImageSpec(width, height, "RGB", "JPEG", "uniform")
    return parallel_map(lambda i: np.asarray(photo_like(spec, seed + i)), range(n))


# ---------------------------------------------------------------------------------------------------------- texts
# A few KB of multilingual text: captions and descriptions. Trains the tokenizer and makes the benchmark texts.
SENTENCES: tuple[str, ...] = (
    "A brown dog runs along the beach at sunset while the waves roll in.",
    "Two children are building a sandcastle next to a red bucket.",
    "A cyclist rides through a narrow street in an old European town.",
    "Fresh vegetables are piled high on a market stall in the morning light.",
    "The snow-covered mountains are reflected in a calm blue lake.",
    "A woman in a yellow raincoat waits for the bus on a rainy evening.",
    "An orange cat sleeps on a windowsill above a pot of basil.",
    "A plate of pasta with tomato sauce and fresh basil on a wooden table.",
    "Ein brauner Hund läuft bei Sonnenuntergang am Strand entlang.",
    "Zwei Kinder bauen eine Sandburg neben einem roten Eimer.",
    "Die verschneiten Berge spiegeln sich in einem ruhigen, blauen See.",
    "Eine Frau im gelben Regenmantel wartet an einem regnerischen Abend auf den Bus.",
    "Un chien brun court le long de la plage au coucher du soleil.",
    "Deux enfants construisent un château de sable à côté d'un seau rouge.",
    "Un chat roux dort sur le rebord de la fenêtre au-dessus d'un pot de basilic.",
    "Une assiette de pâtes à la sauce tomate sur une table en bois.",
    "Un perro marrón corre por la playa al atardecer mientras llegan las olas.",
    "Dos niños construyen un castillo de arena junto a un cubo rojo.",
    "Las montañas nevadas se reflejan en un lago azul y tranquilo.",
    "Un ciclista recorre una calle estrecha de un pueblo antiguo.",
    "Un cane marrone corre lungo la spiaggia al tramonto.",
    "Un piatto di pasta al pomodoro con basilico fresco su un tavolo di legno.",
    "Um cachorro marrom corre pela praia ao pôr do sol.",
    "Legumes frescos empilhados numa banca de mercado pela manhã.",
    "Коричневая собака бежит по пляжу на закате, пока накатывают волны.",
    "Двое детей строят замок из песка рядом с красным ведром.",
    "Рыжий кот спит на подоконнике над горшком с базиликом.",
    "Заснеженные горы отражаются в спокойном голубом озере.",
    "一只棕色的狗在日落时沿着海滩奔跑，海浪不断涌来。",
    "两个孩子在红色水桶旁边堆沙堡。",
    "白雪覆盖的群山倒映在平静的蓝色湖面上。",
    "一只橘猫在窗台上睡觉，旁边是一盆罗勒。",
    "茶色の犬が夕暮れの浜辺を走っている。",
    "赤いバケツの横で二人の子供が砂の城を作っている。",
    "雪をかぶった山々が静かな青い湖に映っている。",
    "كلب بني يركض على طول الشاطئ عند غروب الشمس.",
    "طفلان يبنيان قلعة من الرمل بجانب دلو أحمر.",
    "قطة برتقالية تنام على حافة النافذة فوق أصيص من الريحان.",
    "सूर्यास्त के समय एक भूरा कुत्ता समुद्र तट पर दौड़ रहा है।",
    "दो बच्चे लाल बाल्टी के पास रेत का महल बना रहे हैं।",
    "बर्फ से ढके पहाड़ शांत नीली झील में प्रतिबिंबित हो रहे हैं।",
    "The photograph shows a crowded train station during the evening rush hour, with commuters hurrying past.",
    "Aerial view of green rice terraces on a hillside after the rain, with low clouds in the valley.",
    "Close-up of a hand holding a cup of coffee with latte art in the shape of a leaf.",
    "Das Foto zeigt einen belebten Bahnhof im abendlichen Berufsverkehr.",
    "Vue aérienne de rizières en terrasses vertes sur une colline après la pluie.",
    "Primer plano de una mano que sostiene una taza de café con arte latte.",
)
QUERIES: tuple[str, ...] = (
    "dog on the beach", "Hund am Strand", "chat qui dort", "montañas nevadas", "красное ведро", "海滩上的狗",
    "砂の城", "قطة برتقالية", "रेत का महल", "pasta with basil", "rainy bus stop", "old town street",
    "Kaffee mit Milchschaum", "rizières en terrasses", "estación de tren", "vegetable market",
)


def corpus() -> list[str]:
    """Training text for the benchmark tokenizer: every sentence and query, plus shuffled recombinations."""
    rng = random.Random(0)
    lines = list(SENTENCES) + list(QUERIES)
    for _ in range(200):
        lines.append(" ".join(rng.sample(SENTENCES, 3)))
    return lines


def bench_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct texts: ~40% queries, ~45% one-sentence captions, ~15% passages of 3-5 sentences."""
    rng = random.Random(seed)
    texts: list[str] = []
    misses = 0
    while len(texts) < n:
        roll = len(texts) % 20 if misses < 20 else 19  # the short pools ran dry: passages are ~endless
        if roll < 8:
            text = f"{rng.choice(QUERIES)} {rng.choice(QUERIES)}" if rng.random() < 0.4 else rng.choice(QUERIES)
        elif roll < 17:
            text = rng.choice(SENTENCES)
        else:
            text = " ".join(rng.sample(SENTENCES, rng.randint(3, 5)))
        if text in texts:  # the core computes duplicates once: keep them out of a throughput test
            misses += 1
            continue
        texts.append(text)
        misses = 0
    return texts
