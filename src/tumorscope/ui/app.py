"""The Streamlit app (``tumorscope ui``): each page reads like a description of what it
shows; the logic is in :mod:`tumorscope.ui.views`, the model behind :mod:`tumorscope.ui.client`.

    streamlit run src/tumorscope/ui/app.py      # tumorscope ui / tumorscope app start it
"""

from __future__ import annotations

import streamlit as st

from tumorscope import DISCLAIMER
from tumorscope.ui import charts, views
from tumorscope.ui.client import ServiceClient, ServiceUnavailable

PAGES = ("Slice", "Volume", "Batch", "Model card")
IMAGE_TYPES = ["png", "jpg", "jpeg", "dcm", "nii", "gz"]


@st.cache_resource
def client() -> ServiceClient:
    return ServiceClient.from_env()


def slice_page(api: ServiceClient) -> None:
    st.header("Slice")
    upload = st.file_uploader("Upload a slice (PNG, JPEG, DICOM or 2D NIfTI)", type=IMAGE_TYPES)
    with st.expander("Options"):
        gate = st.slider("Gate: tumour probability under which no mask is shown", 0.0, 1.0, 0.3)
        method = st.selectbox("Uncertainty", ["none", "mc", "tta"], index=0)
    if upload is None:
        st.info("Upload a slice to see what the model finds.")
        return
    data = upload.getvalue()
    try:
        answer = api.predict(
            "upload", data, gate=gate, gradcam=True,
            uncertainty=None if method == "none" else method,
        )  # fmt: skip
    except ServiceUnavailable as err:
        st.error(str(err))
        return
    v = views.slice_view(answer)
    image = views.read_image(upload.name, data)
    cols = st.columns(3)
    cols[0].metric("Tumour probability", f"{v.probability:.3f}")
    cols[1].metric("Confidence", f"{v.confidence:.3f}")
    cols[2].metric("Threshold", f"{v.threshold:.3f}")
    if v.out_of_domain:
        st.warning(views.OUT_OF_DOMAIN)
    elif not v.found:
        st.success(views.NO_TUMOUR)
    else:
        mm2 = "" if v.area_mm2 is None else f", {v.area_mm2:.1f} mm²"
        st.subheader(f"{v.verdict}: {v.area_pixels} px ({v.percentage:.2f} % of the image){mm2}")
    if v.needs_review:
        st.warning("Review by a qualified person is flagged for this image.")
    panels = st.columns(3)
    if image is not None:
        panels[0].image(views.grey(image), caption="Original", width="stretch")
        if v.found and v.mask is not None and v.mask.shape == image.shape[:2]:
            panels[2].image(
                views.overlay(image, v.mask), caption="Segmentation (orange: tumour)",
                width="stretch",
            )  # fmt: skip
    if v.gradcam is not None:
        panels[1].image(v.gradcam, caption="Grad-CAM of the tumour decision", width="stretch")
    if v.uncertainty:
        u = v.uncertainty
        st.caption(
            f"Uncertainty ({u['method']}): score {u['score']:.4f} nats, aleatoric "
            f"{u['tumour_aleatoric']:.4f}, epistemic {u['tumour_mutual_information']:.4f}"
        )
    st.write(v.recommendation)
    for w in v.warnings:  # e.g. a CT for a brain-MRI model: said as loudly as the domain check
        st.warning(f"Warning: {w}")


def volume_page(api: ServiceClient) -> None:
    st.header("Volume")
    upload = st.file_uploader(
        "Upload a NIfTI volume, or a zipped BraTS/HECKTOR case folder or DICOM series",
        type=["nii", "gz", "zip", "dcm"],
    )
    if upload is None:
        st.info("Upload a volume to see its mask, tumour volumes and risk.")
        return
    data = upload.getvalue()
    try:
        answer = api.predict_volume("upload", data)
        mask = views.mask_volume(api.download(answer["mask_url"])) if answer["mask_url"] else None
        cohort = api.info().get("survival") if answer.get("survival") else None
    except ServiceUnavailable as err:
        st.error(str(err))
        return
    c = answer["classification"]
    cols = st.columns(3)
    cols[0].metric("Tumour probability", f"{c['tumour_probability']:.3f}")
    for i, (region, ml) in enumerate(answer["volumes_ml"].items()):
        cols[(1 + i) % 3].metric(f"{region} volume", f"{ml:.1f} mL")
    if answer["domain"].get("in_domain") is False:
        st.warning(views.OUT_OF_DOMAIN)
    image = views.read_nifti(upload.name, data)
    base = image if image is not None else mask
    if base is not None:
        depth = base.shape[-1]
        z = st.slider("Axial slice", 0, depth - 1, depth // 2)
        st.image(views.volume_slice(image, mask, z), caption=f"slice {z}", width=360)
    if mask is not None:
        st.download_button("Download the mask NIfTI", api.download(answer["mask_url"]),
                           file_name="mask.nii.gz")  # fmt: skip
    s = answer.get("survival")
    if s is not None:
        risk = st.columns(3)
        risk[0].metric("Risk (log-hazard)", f"{s['log_hazard']:.3f}")
        if s["percentile"] is not None:
            risk[1].metric("Risk percentile in the training cohort", f"{s['percentile']:.0f}")
        chart = charts.survival_chart(s["survival_curve"], cohort)
        if chart.rows:
            st.vega_lite_chart(spec=charts.survival_spec(chart), width="stretch")
        if chart.note:
            st.caption(chart.note)
    st.write(answer["recommendation"])


def batch_page(api: ServiceClient) -> None:
    st.header("Batch")
    uploads = st.file_uploader(
        "Upload up to 100 slices", type=IMAGE_TYPES, accept_multiple_files=True
    )
    if not uploads:
        st.info("Upload slices to get a table of results.")
        return
    names = [u.name for u in uploads]
    try:
        answer = api.predict_batch([(u.name, u.getvalue()) for u in uploads])
    except ServiceUnavailable as err:
        st.error(str(err))
        return
    rows = views.batch_rows(names, answer)
    st.subheader(views.batch_summary(rows))
    st.dataframe(rows, width="stretch")
    st.download_button("Download CSV", views.rows_csv(rows), file_name="tumorscope-batch.csv")


def model_card_page(api: ServiceClient) -> None:
    st.header("Model card")
    try:
        info = api.info()
    except ServiceUnavailable as err:
        st.error(str(err))
        return
    cols = st.columns(3)
    cols[0].metric("Parameters", f"{info['parameters'].get('total', 0):,}")
    cols[1].metric("Backend", info["backend"])
    cols[2].metric("Profile", info["profile"])
    st.subheader("Calibration")
    rel = charts.reliability(info["report"])
    if rel.missing:
        st.info(rel.missing)
    else:
        st.vega_lite_chart(spec=charts.reliability_chart(rel), width="stretch")
    st.json(info["calibration"])
    st.subheader("Measured metrics")
    st.json(info["report"] or info["validation_metrics"])
    st.caption("Files (sha256)")
    st.json(info["files_sha256"], expanded=False)


def main() -> None:
    st.set_page_config(page_title="tumorscope", layout="wide")
    st.sidebar.title("tumorscope")
    page = st.sidebar.radio("Page", PAGES, index=0)
    st.sidebar.caption(DISCLAIMER)
    st.caption(f"**Not a diagnostic device.** {DISCLAIMER}")
    api = client()
    {"Slice": slice_page, "Volume": volume_page, "Batch": batch_page,
     "Model card": model_card_page}[page](api)  # fmt: skip


main()
