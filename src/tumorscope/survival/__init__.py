"""Patient-level survival: tumour features measured on 3D masks, clinical covariates and a penalised Cox model."""
