"""Quality reports: reference images degraded, run through the service, scored (PSNR,
SSIM) and timed per model, written as markdown with a plot (``pixserve eval``,
``POST /v1/admin/eval``)."""
