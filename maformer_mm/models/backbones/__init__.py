from .maformer import MAFormer, MAFormerStage

__all__ = ['MAFormer', 'MAFormerStage']
