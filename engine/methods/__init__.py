"""The published methods, each written once against the Backbone interface: PPAE, ZETA, AP-Adapter, EditGen,
SAO-Instruct.
"""
