"""Low-level image attributes in plain torch: colour, sharpness, texture (GLCM) and shape (Hu moments).

Every function takes float images `(B, 3, H, W)` in [0, 1] (decoded posteriors, never JPEG: JPEG artefacts bias
sharpness and GLCM) and returns float32 `(B, D)`. Grey is ITU-R BT.601 luma, `0.299 R + 0.587 G + 0.114 B`, as
OpenCV's `COLOR_RGB2GRAY`, so brightness, contrast, saturation, colourfulness and Laplacian variance are the
official NoiseQuery `analyze_images.py` statistics on a [0, 1] scale (multiply by 255, or 255^2 for the Laplacian
variance, for theirs). Standard deviations are population ones (NumPy's default).

Examples:
    >>> pixels = torch.zeros(1, 3, 8, 8); pixels[:, 0] = 1  # pure red
    >>> dict(zip(COLOR_COLUMNS, color_attributes(pixels)[0].tolist()))["lab_l"]  # 53.24
"""

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)
D65_WHITE = (0.95047, 1.0, 1.08883)
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
GLCM_LEVELS = 32
GLCM_OFFSETS = ((0, 1), (1, 1), (1, 0), (1, -1))  # (dy, dx): 0, 45, 90 and 135 degrees at distance 1
HFE_CUTOFF = 0.25  # fraction of the Nyquist frequency above which power counts as high-frequency

COLOR_COLUMNS = ("brightness", "contrast", "saturation", "colorfulness", "mean_r", "mean_g", "mean_b",
                 "lab_l", "lab_a", "lab_b")
SHARPNESS_COLUMNS = ("laplacian_var", "hfe")
TEXTURE_COLUMNS = ("glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation")
SHAPE_COLUMNS = tuple(f"hu_{i}" for i in range(1, 8))


def check_pixels(pixels):
    if not torch.is_tensor(pixels) or pixels.ndim != 4 or pixels.shape[1] != 3:
        shape = tuple(pixels.shape) if torch.is_tensor(pixels) else type(pixels).__name__
        raise ValueError(f"`pixels` must be a (B, 3, H, W) tensor in [0, 1], got {shape}.")
    return pixels.detach().float()


def gray(pixels):
    """BT.601 luma `(B, H, W)`."""
    weights = torch.tensor(LUMA, device=pixels.device).view(1, 3, 1, 1)
    return (pixels * weights).sum(1)


def srgb_to_lab(pixels):
    """CIE L*a*b* (D65) of sRGB pixels in [0, 1]: `(B, 3, H, W)` with L in [0, 100]."""
    linear = torch.where(pixels <= 0.04045, pixels / 12.92, ((pixels + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor(SRGB_TO_XYZ, device=pixels.device)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    xyz = xyz / torch.tensor(D65_WHITE, device=pixels.device).view(1, 3, 1, 1)
    delta = 6 / 29
    f = torch.where(xyz > delta ** 3, xyz.clamp(min=0) ** (1 / 3), xyz / (3 * delta ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def color_attributes(pixels):
    """`COLOR_COLUMNS`: grey mean and std, mean HSV saturation, Hasler-Suesstrunk colourfulness, mean RGB and the
    mean of per-pixel L*a*b*."""
    pixels = check_pixels(pixels)
    luma = gray(pixels).flatten(1)
    high, low = pixels.amax(1), pixels.amin(1)
    saturation = torch.where(high > 0, (high - low) / high.clamp(min=1e-12), torch.zeros_like(high))
    red, green, blue = pixels[:, 0].flatten(1), pixels[:, 1].flatten(1), pixels[:, 2].flatten(1)
    rg, yb = (red - green).abs(), (0.5 * (red + green) - blue).abs()
    # Hasler & Suesstrunk (2003), Eq. 3: sigma_rgyb + 0.3 mu_rgyb
    colorfulness = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False)).sqrt() \
        + 0.3 * (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    lab = srgb_to_lab(pixels).flatten(2).mean(2)
    return torch.stack([luma.mean(1), luma.std(1, unbiased=False), saturation.flatten(1).mean(1), colorfulness,
                        red.mean(1), green.mean(1), blue.mean(1), lab[:, 0], lab[:, 1], lab[:, 2]], 1)


def sharpness_attributes(pixels):
    """`SHARPNESS_COLUMNS`: variance of the 4-neighbour Laplacian of grey (OpenCV `Laplacian(ksize=1)` with its
    default reflect-101 border) and high-frequency energy, the share of the mean-free grey image's FFT power at
    radial frequencies above `HFE_CUTOFF` x Nyquist (0 for a flat image)."""
    luma = gray(check_pixels(pixels))[:, None]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=luma.device).view(1, 1, 3, 3)
    laplacian = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="reflect"), kernel).flatten(1)
    centred = luma[:, 0] - luma[:, 0].mean((1, 2), keepdim=True)
    power = torch.fft.fft2(centred).abs() ** 2
    height, width = centred.shape[-2:]
    fy, fx = torch.fft.fftfreq(height, device=luma.device), torch.fft.fftfreq(width, device=luma.device)
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()  # cycles per pixel; Nyquist is 0.5
    total = power.flatten(1).sum(1)
    high = (power * (radius > HFE_CUTOFF * 0.5)).flatten(1).sum(1)
    hfe = torch.where(total > 0, high / total.clamp(min=1e-30), torch.zeros_like(total))
    return torch.stack([laplacian.var(1, unbiased=False), hfe], 1)


def glcm(pixels, levels=GLCM_LEVELS, offsets=GLCM_OFFSETS):
    """Symmetric, normalised grey-level co-occurrence matrices `(B, len(offsets), levels, levels)` of grey
    quantised to `levels` levels (`floor(grey * levels)`, 1.0 in the top level)."""
    quantised = (gray(check_pixels(pixels)) * levels).long().clamp(0, levels - 1)
    batch, height, width = quantised.shape
    base = torch.arange(batch, device=quantised.device).view(batch, 1) * levels * levels
    matrices = []
    for dy, dx in offsets:
        first = quantised[:, :height - dy, max(0, -dx):width - max(0, dx)]
        second = quantised[:, dy:, max(0, dx):width + min(0, dx)]
        index = (base + (first * levels + second).flatten(1)).flatten()
        counts = torch.bincount(index, minlength=batch * levels * levels).view(batch, levels, levels).double()
        counts = counts + counts.transpose(1, 2)
        matrices.append(counts / counts.sum((1, 2), keepdim=True).clamp(min=1))
    return torch.stack(matrices, 1)


def texture_attributes(pixels):
    """`TEXTURE_COLUMNS`: GLCM contrast, homogeneity, energy (sqrt of ASM) and correlation (1 for a flat image),
    as scikit-image's `graycoprops`, averaged over the four angles at distance 1."""
    matrix = glcm(pixels)
    levels = matrix.shape[-1]
    i = torch.arange(levels, device=matrix.device, dtype=matrix.dtype).view(levels, 1)
    j = i.view(1, levels)
    contrast = (matrix * (i - j) ** 2).sum((-2, -1))
    homogeneity = (matrix / (1 + (i - j) ** 2)).sum((-2, -1))
    energy = (matrix ** 2).sum((-2, -1)).sqrt()
    mean_i, mean_j = (matrix * i).sum((-2, -1)), (matrix * j).sum((-2, -1))
    std_i = ((matrix * (i - mean_i[..., None, None]) ** 2).sum((-2, -1))).sqrt()
    std_j = ((matrix * (j - mean_j[..., None, None]) ** 2).sum((-2, -1))).sqrt()
    covariance = (matrix * (i - mean_i[..., None, None]) * (j - mean_j[..., None, None])).sum((-2, -1))
    flat = (std_i < 1e-15) | (std_j < 1e-15)
    correlation = torch.where(flat, torch.ones_like(covariance), covariance / (std_i * std_j).clamp(min=1e-30))
    return torch.stack([contrast, homogeneity, energy, correlation], 2).mean(1).float()


def hu_moments(image):
    """The seven Hu (1962) invariants of intensity images `(B, H, W)`, float64 `(B, 7)`; x is the column index."""
    image = image.double()
    height, width = image.shape[-2:]
    y = torch.arange(height, dtype=torch.float64, device=image.device).view(height, 1)
    x = torch.arange(width, dtype=torch.float64, device=image.device).view(1, width)
    m00 = image.sum((1, 2)).clamp(min=1e-30)
    xc = (image * x).sum((1, 2)) / m00
    yc = (image * y).sum((1, 2)) / m00
    dx, dy = x - xc.view(-1, 1, 1), y - yc.view(-1, 1, 1)

    def eta(p, q):  # normalised central moment mu_pq / mu_00^(1 + (p + q) / 2)
        return (image * dx ** p * dy ** q).sum((1, 2)) / m00 ** (1 + (p + q) / 2)

    n20, n02, n11 = eta(2, 0), eta(0, 2), eta(1, 1)
    n30, n03, n21, n12 = eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
    a, b = n30 + n12, n21 + n03
    return torch.stack([
        n20 + n02,
        (n20 - n02) ** 2 + 4 * n11 ** 2,
        (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
        a ** 2 + b ** 2,
        (n30 - 3 * n12) * a * (a ** 2 - 3 * b ** 2) + (3 * n21 - n03) * b * (3 * a ** 2 - b ** 2),
        (n20 - n02) * (a ** 2 - b ** 2) + 4 * n11 * a * b,
        (3 * n21 - n03) * a * (a ** 2 - 3 * b ** 2) - (n30 - 3 * n12) * b * (3 * a ** 2 - b ** 2),
    ], 1)


def log_scale(values):
    """`-sign(h) log10 |h|`, the usual scaling of Hu moments (0 where h is 0)."""
    return -torch.sign(values) * torch.log10(values.abs().clamp(min=1e-300)) * (values != 0)


def shape_attributes(pixels):
    """`SHAPE_COLUMNS`: log-scaled Hu moments of the grey image."""
    return log_scale(hu_moments(gray(check_pixels(pixels)))).float()

